"""The batch path on a local Ray cluster gives the same polygons as on one machine.

Two actors (``ray.init(num_cpus=2)``) process the 45 tiny regions of a VRT mosaic of four
real pv01 held-out tiles, in whatever order Ray hands them out.
"""

from __future__ import annotations

import pytest

from protocol.params import BatchParams, DetectParams
from tests.support import DEFAULT_MODEL, free_port, gpkg_set, needs_real, polygon_set

ray = pytest.importorskip("ray", reason="ray is not installed (requirements-backend.txt)")


@pytest.fixture
def local_ray():
    from backend.inference.batch.distributed import init_ray
    started = init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@needs_real
def test_ray_executor_equals_single_machine(pv01_vrt, tmp_path, local_ray):
    from backend.daemon.batch_runner import run_batch, submit
    from backend.daemon.jobstore import JobStore
    from backend.inference.detect import run_detect

    req = {"source": {"kind": "file", "path": str(pv01_vrt)}, "model": DEFAULT_MODEL}
    detect = DetectParams(req["source"], DEFAULT_MODEL)
    store = JobStore(tmp_path / "jobs")
    local = submit(store, BatchParams(detect, out_path=str(tmp_path / "local.gpkg"),
                                      region_px=100, halo_px=16))
    remote = submit(store, BatchParams(detect, out_path=str(tmp_path / "ray.gpkg"),
                                       region_px=100, halo_px=16, executor="ray"))
    out = run_batch(store, remote)
    assert out["stats"]["executor"] == "ray" and out["stats"]["regions"] == 45
    assert len(ray.nodes()) >= 1 and ray.cluster_resources().get("CPU") == 2
    run_batch(store, local)
    got_ray, regions_ray = gpkg_set(tmp_path / "ray.gpkg")
    got_local, regions_local = gpkg_set(tmp_path / "local.gpkg")
    assert got_ray == got_local and len(got_ray) >= 10
    assert sorted(regions_ray) == sorted(regions_local)  # same owners
    ref = run_detect({"source": req["source"], "model": DEFAULT_MODEL}, [])
    assert got_ray == polygon_set(ref["features"])


def _descendants(pid: int) -> list:
    """Process ids below ``pid`` (Linux ``/proc``)."""
    import os
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _listening(pids) -> list:
    """``(pid, ip, port)`` of the TCP sockets ``pids`` listen on (Linux ``/proc``: the
    socket inodes of each process's descriptors, matched in ``/proc/net/tcp{,6}``)."""
    import ipaddress
    import os
    listen = {}
    for name, fam in (("tcp", 4), ("tcp6", 6)):
        with open(f"/proc/net/{name}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] != "0A":  # LISTEN
                    continue
                hexip, hexport = cols[1].split(":")
                raw = bytes.fromhex(hexip)
                # /proc prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                listen[cols[9]] = (str(ipaddress.ip_address(raw)), int(hexport, 16))
    out = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = target[8:-1]
                if inode in listen:
                    out.append((pid, *listen[inode]))
    return out


#: Ray 2.60's GCS server and raylet bind their gRPC ports to every interface whatever
#: ``--node-ip-address`` says (github.com/ray-project/ray/issues/7418, and the binding
#: work of github.com/ray-project/ray/pull/59852); what guards them is Ray's token
#: authentication, on by default for local clusters since Ray 2.59.
_RAY_ANY_ADDRESS = ("gcs_server", "raylet")


def _exe(pid: int) -> str:
    import os
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return "?"


def _open_listeners(pids) -> list:
    """Listeners of ``pids`` on a non-loopback address, except the known Ray ones."""
    import ipaddress

    def loopback(ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        mapped = getattr(a, "ipv4_mapped", None)  # ::ffff:127.0.0.1
        return a.is_loopback or bool(mapped and mapped.is_loopback)

    return [(pid, _exe(pid), ip, port) for pid, ip, port in _listening(pids)
            if not loopback(ip) and _exe(pid) not in _RAY_ANY_ADDRESS]


def test_local_cluster_listens_on_loopback_only(local_ray):
    """The cluster a batch job starts for itself serves this process only: its node is
    127.0.0.1 and every socket its processes listen on is on the loopback interface,
    but for the GCS and raylet ports that Ray binds everywhere (:data:`_RAY_ANY_ADDRESS`,
    token-protected: see the next test)."""
    import os
    nodes = ray.nodes()
    assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes)
    pids = _descendants(os.getpid())
    assert _listening(pids), "no listening socket found: the check would prove nothing"
    assert _open_listeners(pids) == []


_DRIVER = ("import ray, sys\n"
           "ray.init(address=sys.argv[1], log_to_driver=False)\n"
           "print('CPU', ray.cluster_resources().get('CPU'))\n")


#: A daemon's batch job on the cluster at ``RAY_ADDRESS`` (argv: VRT, GeoPackage, jobs
#: folder, model); prints the executor, or the error code and message.
_BATCH = ("import sys\n"
          "from backend.daemon.batch_runner import run_batch, submit\n"
          "from backend.daemon.jobstore import JobStore\n"
          "from protocol.errors import JobError\n"
          "from protocol.params import BatchParams, DetectParams\n"
          "vrt, out, jobs, model = sys.argv[1:5]\n"
          "store = JobStore(jobs)\n"
          "job = submit(store, BatchParams(DetectParams({'kind': 'file', 'path': vrt}, model),\n"
          "             out_path=out, region_px=100, halo_px=16, executor='ray'))\n"
          "try:\n"
          "    print('EXECUTOR', run_batch(store, job)['stats']['executor'])\n"
          "except JobError as e:\n"
          "    print('ERROR', e.code, e.message)\n")


@needs_real
def test_cluster_head_on_loopback_with_a_token(tmp_path, pv01_vrt):
    """A cluster started for batch jobs as the README says (``ray start --head
    --node-ip-address=127.0.0.1`` with ``RAY_AUTH_MODE=token``) listens on 127.0.0.1
    (but for the ports Ray binds everywhere), and admits a driver with its token and no
    driver with another one: the token is what guards those ports. A batch job sent
    there through ``RAY_ADDRESS`` with the token gives the single machine's polygons;
    with a wrong token it is ``invalid_input`` naming ``RAY_ADDRESS``."""
    import os
    import secrets
    import subprocess
    import sys
    from pathlib import Path
    ray_bin = Path(sys.executable).with_name("ray")
    port = free_port()
    token = secrets.token_hex(16)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, HOME=str(tmp_path),
               RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    temp = Path("/tmp") / f"ray-{port}"  # short: socket paths have a length limit
    head = subprocess.run(
        [str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp}",
         "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    assert head.returncode == 0, head.stderr[-2000:]
    try:
        pids = [int(p) for p in subprocess.run(
            ["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()]
        socks = _listening(pids)
        assert any(p == port for _, _, p in socks), socks
        assert _open_listeners(pids) == []
        address = f"127.0.0.1:{port}"
        ok = subprocess.run([sys.executable, "-c", _DRIVER, address], env=env,
                            capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and "CPU 1.0" in ok.stdout, ok.stderr[-2000:]
        bad = subprocess.run([sys.executable, "-c", _DRIVER, address],
                             env=dict(env, RAY_AUTH_TOKEN=secrets.token_hex(16)),
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "CPU 1.0" not in bad.stdout
        from backend.config import REPO
        from backend.inference.detect import run_detect
        job_env = dict(env, RAY_ADDRESS=address, PYTHONPATH=str(REPO))
        args = [sys.executable, "-c", _BATCH, str(pv01_vrt), str(tmp_path / "ray.gpkg"),
                str(tmp_path / "jobs"), DEFAULT_MODEL]
        done = subprocess.run(args, env=job_env, cwd=str(REPO), capture_output=True,
                              text=True, timeout=600)
        assert "EXECUTOR ray" in done.stdout, (done.stdout[-1000:], done.stderr[-2000:])
        got, _ = gpkg_set(tmp_path / "ray.gpkg")
        ref = run_detect({"source": {"kind": "file", "path": str(pv01_vrt)},
                          "model": DEFAULT_MODEL}, [])
        assert got == polygon_set(ref["features"]) and len(got) >= 10
        args[4] = str(tmp_path / "ray-bad.gpkg")
        refused = subprocess.run(args, env=dict(job_env, RAY_AUTH_TOKEN=secrets.token_hex(16)),
                                 cwd=str(REPO), capture_output=True, text=True, timeout=300)
        assert "ERROR invalid_input cannot use the Ray cluster at RAY_ADDRESS=" \
            f"{address}" in refused.stdout, (refused.stdout[-1000:], refused.stderr[-2000:])
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True,
                       timeout=120)
