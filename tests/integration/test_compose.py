"""The compose cluster: its file is valid and keeps its invariants, and its topology trains to
completion without Docker: every service's command and environment, exactly as
deploy/docker-compose.yml gives them, run as processes in separate network namespaces, each
"host" with its own address, finding the others by service name."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from dni_dist.keys import generate

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
GPU = ROOT / "deploy" / "docker-compose.gpu.yml"


def services(*files: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for f in files:
        for name, svc in yaml.safe_load(f.read_text())["services"].items():
            merged.setdefault(name, {}).update(svc)
    return merged


def blocks(svcs: dict[str, Any]) -> list[str]:
    return sorted(n for n, s in svcs.items() if "RANK" in (s.get("environment") or {}))


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose missing (apt-get install docker-compose)"
)
@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, GPU]], ids=["cpu", "gpu"])
def test_docker_compose_validates_the_file(files: list[Path]) -> None:
    cmd = ["docker-compose", *[a for f in files for a in ("-f", str(f))], "config", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_compose_invariants() -> None:
    svcs = services(COMPOSE)
    names = blocks(svcs)
    world = {int(svcs[n]["environment"]["WORLD_SIZE"]) for n in names}
    assert world == {len(names)} and len(names) == 4, "one service per block"
    assert sorted(int(svcs[n]["environment"]["RANK"]) for n in names) == list(range(len(names)))
    for n in names:
        env = svcs[n]["environment"]
        assert env["DNI_HOST"] == n, "blocks advertise their service name"
        assert (
            env["MASTER_ADDR"] in svcs and svcs[n]["depends_on"][env["MASTER_ADDR"]]["condition"] == "service_healthy"
        )
        assert svcs[n]["restart"] == "on-failure" and "--resume" in svcs[n]["command"]
        assert "--target-timeout" in svcs[n]["command"], "a restarted neighbour must not stall the credit window"
        assert "runs:/runs" in svcs[n]["volumes"], "checkpoints on the shared volume"
        cmd = svcs[n]["command"]
        assert cmd[cmd.index("--keys") + 1] == "/run/secrets/dni_keys" and svcs[n]["secrets"] == ["dni_keys"]
        assert "--insecure" not in cmd
    ports = [p.split(":") for s in svcs.values() for p in s.get("ports", [])]
    assert all(len(p) == 3 and p[0] == "127.0.0.1" for p in ports), f"publish on 127.0.0.1 only: {ports}"
    published = [p[1] for p in ports]
    assert len(published) == len(set(published)), f"published ports collide: {published}"
    grafana = svcs["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer" and "GF_SECURITY_ADMIN_PASSWORD__FILE" in grafana
    for name, svc in svcs.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("restart"), f"{name} has no restart policy"
    assert svcs["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    gpu = services(COMPOSE, GPU)
    ids = [gpu[n]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for n in names]
    assert sorted(i for d in ids for i in d) == [str(k) for k in range(len(names))], "one distinct GPU per block"
    assert all("run.device=cuda:0" in gpu[n]["command"] for n in names)


def test_dockerfile_is_non_root_with_worker_entrypoint_and_metrics_healthcheck() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "\nUSER dni" in text and 'ENTRYPOINT ["dni-worker"]' in text
    assert "HEALTHCHECK" in text and "/metrics" in text
    assert "ARG BASE=" in text and "ARG TORCH=" in text, "CPU and CUDA variants are build args"


# -- the topology in network namespaces -----------------------------------------------------


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


class Hosts:
    """One network namespace per service on a private bridge; addresses in 127.77.0.0/16."""

    def __init__(self, names: list[str]) -> None:
        tag = uuid.uuid4().hex[:4]
        self.switch = f"dsw{tag}"
        self.ns = {n: f"d{tag}{i}" for i, n in enumerate(names)}
        self.addr = {n: f"127.77.{i // 250}.{i % 250 + 2}" for i, n in enumerate(names)}
        _sh("ip", "netns", "add", self.switch)
        _sh("ip", "netns", "exec", self.switch, "ip", "link", "add", "br0", "type", "bridge")
        _sh("ip", "netns", "exec", self.switch, "ip", "link", "set", "br0", "up")
        hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in self.addr.items())
        for i, (name, ns) in enumerate(self.ns.items()):
            inner, outer = f"vh{tag}{i}", f"vs{tag}{i}"
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            _sh("ip", "link", "set", inner, "netns", ns)
            _sh("ip", "link", "set", outer, "netns", self.switch)
            _sh("ip", "netns", "exec", self.switch, "ip", "link", "set", outer, "master", "br0")
            _sh("ip", "netns", "exec", self.switch, "ip", "link", "set", outer, "up")
            for key in ("all", inner):  # 127/8 on a non-loopback link needs route_localnet
                _sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.conf.{key}.route_localnet=1")
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.addr[name]}/16", "dev", inner)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            etc = Path("/etc/netns") / ns  # `ip netns exec` mounts this over /etc: service names resolve
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts)

    def run(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as f:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.ns[name], *cmd], env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
            )

    def check(self, name: str, cmd: list[str], env: dict[str, str]) -> bool:
        proc = subprocess.run(["ip", "netns", "exec", self.ns[name], *cmd], env=env, capture_output=True, timeout=30)
        return proc.returncode == 0

    def close(self) -> None:
        for ns in [*self.ns.values(), self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)


SHORT = ["--steps", "600"]  # the fault tests need a run past step 300, not the whole demo


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2 to create network namespaces"
    probe = f"dniprobe{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "this kernel/sandbox refuses `ip netns add`"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _container_argv(svc: dict[str, Any], runs: Path, keys: Path) -> list[str]:
    """The container's argv on this machine: the image's entry point (dni-worker) or the service's
    own, with the image's paths (/app = this checkout, /runs = the volume, /run/secrets/dni_keys =
    the keys secret) mapped here."""
    entry = svc.get("entrypoint") or ["dni-worker"]
    argv = [*entry, *svc.get("command", [])]
    exe = {"python": sys.executable, "dni-worker": str(Path(sys.executable).parent / "dni-worker")}
    mapped = [a.replace("/app/", f"{ROOT}/").replace("/runs/", f"{runs}/") for a in argv]
    return [exe.get(a, str(keys) if a == "/run/secrets/dni_keys" else a) for a in mapped]


def _healthcheck_argv(svc: dict[str, Any]) -> list[str]:
    test = svc["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [sys.executable if a == "python" else a for a in test[1:]]


@pytest.mark.slow
def test_compose_topology_trains_in_separate_network_namespaces(tmp_path: Path) -> None:
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    svcs = services(COMPOSE)
    names = ["rendezvous", *blocks(svcs)]
    runs = tmp_path / "runs"
    runs.mkdir()
    keys = generate(tmp_path / "keys", blocks=len(names) - 1)  # as the compose header says to
    hosts = Hosts(names)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    envs = {n: {**os.environ, **{k: str(v) for k, v in (svcs[n].get("environment") or {}).items()}} for n in names}
    try:
        store_argv = _container_argv(svcs["rendezvous"], runs, keys)
        procs["rendezvous"] = hosts.run("rendezvous", store_argv, envs["rendezvous"],
                                        tmp_path / "rendezvous.log")  # fmt: skip
        deadline = time.monotonic() + 60
        while not hosts.check("rendezvous", _healthcheck_argv(svcs["rendezvous"]), envs["rendezvous"]):
            assert time.monotonic() < deadline, (tmp_path / "rendezvous.log").read_text()
            time.sleep(0.5)
        for n in names[1:]:  # depends_on: rendezvous is healthy
            procs[n] = hosts.run(n, _container_argv(svcs[n], runs, keys), envs[n], tmp_path / f"{n}.log")
        healthy: set[str] = set()
        deadline = time.monotonic() + 240
        while any(procs[n].poll() is None for n in names[1:]):
            for n in names[1:]:
                if n not in healthy and procs[n].poll() is None and hosts.check(n, _healthcheck_argv(svcs[n]), envs[n]):
                    healthy.add(n)
            assert time.monotonic() < deadline, "the cluster did not finish in 240 s"
            time.sleep(0.5)
        logs = {n: (tmp_path / f"{n}.log").read_text() for n in names}
        assert all(procs[n].returncode == 0 for n in names[1:]), {n: logs[n][-2000:] for n in names[1:]}
        assert healthy == set(names[1:]), f"healthchecks passed only for {healthy}"
        procs["rendezvous"].wait(timeout=60)  # it leaves once every block has exited
        assert procs["rendezvous"].returncode == 0, logs["rendezvous"]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        hosts.close()
    summary = json.loads((runs / "compose" / "summary.json").read_text())
    assert summary["status"] == "finished" and len(summary["blocks"]) == 4
    assert summary["final"]["test_accuracy"] > 0.9
    # each block listened on its own host's fixed port and was reached by service name
    assert "tcp://0.0.0.0:5555" in logs["block1"]


def test_kubernetes_jobset_has_the_compose_topology() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "jobset.yaml").read_text()))
    jobset = next(d for d in docs if d["kind"] == "JobSet")
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    jobs = {r["name"]: r["template"]["spec"] for r in jobset["spec"]["replicatedJobs"]}
    block = jobs["block"]
    pod = block["template"]["spec"]
    (worker,) = pod["containers"]
    env = {e["name"]: e for e in worker["env"]}
    world = int(env["WORLD_SIZE"]["value"])
    assert block["parallelism"] == block["completions"] == world and block["completionMode"] == "Indexed"
    assert "job-completion-index" in env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    sub = jobset["spec"]["network"]["subdomain"]
    assert env["MASTER_ADDR"]["value"] == f"{jobset['metadata']['name']}-rendezvous-0-0.{sub}"  # JobSet pod DNS
    store = jobs["rendezvous"]["template"]["spec"]["containers"][0]
    assert store["command"][-1] == "dni_dist.rendezvous" and env["MASTER_PORT"]["value"] in store["args"]
    assert "command" not in worker, "workers run the image's dni-worker entry point"
    assert "--resume" in worker["args"] and worker["readinessProbe"]["httpGet"]["port"] == 9100
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    secret = next(v for v in pod["volumes"] if v["name"] == "keys")["secret"]["secretName"]
    assert (
        worker["args"][worker["args"].index("--keys") + 1] == mounts["keys"]["mountPath"] and mounts["keys"]["readOnly"]
    )
    assert secret == "dni-keys" and "--insecure" not in worker["args"]
    mount = worker["volumeMounts"][0]
    assert any(a.startswith(mount["mountPath"]) for a in worker["args"]), "--out on the shared volume"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


@pytest.mark.slow
def test_a_compose_block_restarted_on_failure_rejoins_the_others(tmp_path: Path) -> None:
    """What `restart: on-failure` does, without Docker: block2 is SIGKILLed once the first complete
    checkpoint exists and started again with its service's command in its namespace; it rejoins
    (a new attempt in the still-running rendezvous, the same fixed ports) while the other blocks
    keep their processes, and the run finishes."""
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    svcs = services(COMPOSE)
    names = ["rendezvous", *blocks(svcs)]
    runs = tmp_path / "runs"
    runs.mkdir()
    keys = generate(tmp_path / "keys", blocks=len(blocks(svcs)))
    hosts = Hosts(names)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    envs = {n: {**os.environ, **{k: str(v) for k, v in (svcs[n].get("environment") or {}).items()}} for n in names}
    first = runs / "compose" / "checkpoints" / "step-000000199" / "manifest.json"
    try:
        store_argv = _container_argv(svcs["rendezvous"], runs, keys)
        procs["rendezvous"] = hosts.run("rendezvous", store_argv, envs["rendezvous"],
                                        tmp_path / "rendezvous.log")  # fmt: skip
        deadline = time.monotonic() + 60
        while not hosts.check("rendezvous", _healthcheck_argv(svcs["rendezvous"]), envs["rendezvous"]):
            assert time.monotonic() < deadline, (tmp_path / "rendezvous.log").read_text()
            time.sleep(0.5)
        for n in names[1:]:
            procs[n] = hosts.run(n, [*_container_argv(svcs[n], runs, keys), *SHORT], envs[n], tmp_path / f"{n}.log")
        kept = {n: procs[n].pid for n in names[1:] if n != "block2"}
        deadline = time.monotonic() + 240
        while not first.is_file():
            assert time.monotonic() < deadline and procs["block2"].poll() is None, "no first checkpoint"
            time.sleep(0.2)
        procs["block2"].kill()
        assert procs["block2"].wait(timeout=30) == -9
        procs["block2"] = hosts.run("block2", [*_container_argv(svcs["block2"], runs, keys), *SHORT], envs["block2"],
                                    tmp_path / "block2-restarted.log")  # fmt: skip
        while any(procs[n].poll() is None for n in names[1:]):
            assert time.monotonic() < deadline, "the cluster did not finish in 240 s"
            time.sleep(0.5)
        logs = {p.stem: p.read_text() for p in tmp_path.glob("*.log")}
        assert all(procs[n].returncode == 0 for n in names[1:]), {n: logs.get(n, "")[-2000:] for n in logs}
        assert {n: procs[n].pid for n in kept} == kept, "the other blocks kept their processes"
        procs["rendezvous"].wait(timeout=60)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        hosts.close()
    summary = json.loads((runs / "compose" / "summary.json").read_text())
    assert summary["status"] == "finished" and [b["attempt"] for b in summary["blocks"]] == [0, 0, 1, 0]
    assert "restarted (attempt 1): rejoining" in logs["block2-restarted"]
    assert "block 2 is back (attempt 1)" in logs["block1"] and "block 2 is back (attempt 1)" in logs["block3"]


@pytest.mark.slow
def test_a_partition_between_two_namespace_hosts_heals(tmp_path: Path) -> None:
    """The fault proxy across hosts: block2 (its own network namespace) puts a FaultProxy on its
    address in front of its activation socket and advertises it; at step 300 the link from block1
    carries nothing for 5 s. The run finishes and block1's target lag shows the outage."""
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    svcs = services(COMPOSE)
    names = ["rendezvous", *blocks(svcs)]
    runs = tmp_path / "runs"
    runs.mkdir()
    keys = generate(tmp_path / "keys", blocks=len(blocks(svcs)))
    hosts = Hosts(names)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    envs = {n: {**os.environ, **{k: str(v) for k, v in (svcs[n].get("environment") or {}).items()}} for n in names}
    fault = [*SHORT, "--inject-fault", "block=2,step=300,kind=partition,seconds=5"]
    try:
        store_argv = _container_argv(svcs["rendezvous"], runs, keys)
        procs["rendezvous"] = hosts.run("rendezvous", store_argv, envs["rendezvous"],
                                        tmp_path / "rendezvous.log")  # fmt: skip
        deadline = time.monotonic() + 60
        while not hosts.check("rendezvous", _healthcheck_argv(svcs["rendezvous"]), envs["rendezvous"]):
            assert time.monotonic() < deadline, (tmp_path / "rendezvous.log").read_text()
            time.sleep(0.5)
        for n in names[1:]:
            procs[n] = hosts.run(n, [*_container_argv(svcs[n], runs, keys), *fault], envs[n], tmp_path / f"{n}.log")
        deadline = time.monotonic() + 240
        while any(procs[n].poll() is None for n in names[1:]):
            assert time.monotonic() < deadline, "the cluster did not finish in 240 s"
            time.sleep(0.5)
        logs = {n: (tmp_path / f"{n}.log").read_text() for n in names[1:]}
        assert all(procs[n].returncode == 0 for n in names[1:]), {n: logs[n][-2000:] for n in logs}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        hosts.close()
    assert re.search(r"fault proxy tcp://127\.77\.\d+\.\d+:\d+ -> block2:5555: partitioned for 5\.0s", logs["block2"])
    summary = json.loads((runs / "compose" / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["blocks"][1]["lag_seconds"]["max"] >= 4.5, summary["blocks"][1]["lag_seconds"]
