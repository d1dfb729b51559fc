"""`adb://SERIAL`: benchmark_model's log parser, and bench_adb through adbutils against a fake
adb server on 127.0.0.1.

The fake server speaks the adb server protocol that adbutils uses (host:version,
host:devices, host:tport:serial, shell:, sync: STAT/SEND) and plays one device whose
/data/local/tmp is a folder in tmp_path: shell commands run locally with that path mapped,
``getprop`` is a script, and ``benchmark_model`` is a script that prints a captured log in
the official format. A real device is used only by the ``android`` test.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("adbutils")

from edgekit.cli import main
from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure.remote import (
    _adb,
    bench_adb,
    bench_on_device,
    parse_benchmark_output,
)
from edgekit.measure.remote._adb import DEVICE_DIR, latency_from_output
from edgekit.measure.remote._devices import list_devices

BENCH_KEYS = {
    "latency_ms",
    "load_ms",
    "first_ms",
    "runs",
    "warmup",
    "peak_rss_mb",
    "runtime",
    "host",
    "artifact",
}
SERIAL = "emulator-5554"

# Recent benchmark_model (TF >= 2.13 / LiteRT): INFO: prefix, percentiles on the stat lines.
LOG_WITH_PERCENTILES = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [20]
INFO: Min runs duration (seconds): [0]
INFO: Max runs duration (seconds): [600]
INFO: Num threads: [2]
INFO: Min warmup runs: [3]
INFO: Min warmup runs duration (seconds): [0]
INFO: Graph: [/data/local/tmp/edgekit-0123456789ab/model.tflite]
INFO: #threads used for CPU inference: [2]
INFO: Loaded model /data/local/tmp/edgekit-0123456789ab/model.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.00214
INFO: Initialized session in 5.367ms.
INFO: Running benchmark for at least 3 iterations and at least 0 seconds but terminate if exceeding 600 seconds.
INFO: count=3 first=58920 curr=50112 min=50112 max=58920 avg=53478.9 std=3921 p5=50112 median=51404 p95=58920

INFO: Running benchmark for at least 20 iterations and at least 0 seconds but terminate if exceeding 600 seconds.
INFO: count=20 first=51021 curr=50877 min=49713 max=53908 avg=50986.5 std=1012 p5=49713 median=50822 p95=53908

INFO: Inference timings in us: Init: 5367, First inference: 58920, Warmup (avg): 53478.9, Inference (avg): 50986.5
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=2.21094 overall=9.87109
"""

# Older benchmark_model (TF 2.x before percentiles): no prefix, exponent form, no p5/median.
LOG_WITHOUT_PERCENTILES = """\
STARTING!
Min num runs: [50]
Min runs duration (seconds): [0]
Num threads: [4]
Min warmup runs: [1]
Graph: [/data/local/tmp/edgekit-0123456789ab/model.tflite]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/edgekit-0123456789ab/model.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0 seconds but terminate if exceeding 600 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 600 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""

# Through logcat (the benchmark APK, or `adb logcat -s tflite`).
LOG_LOGCAT = """\
06-12 10:41:07.311  8123  8123 I tflite  : Initialized session in 92.318ms.
06-12 10:41:09.402  8123  8123 I tflite  : count=25 first=150113 curr=144718 min=141032 max=152877 avg=145528 std=2786 p5=141032 median=145102 p95=150113
06-12 10:41:09.402  8123  8123 I tflite  : Inference timings in us: Init: 92318, First inference: 187533, Warmup (avg): 211669, Inference (avg): 145528
"""

LOG_FAILED = """\
INFO: STARTING!
INFO: Graph: [/data/local/tmp/edgekit-0123456789ab/model.tflite]
INFO: Loaded model /data/local/tmp/edgekit-0123456789ab/model.tflite
ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'. An older version of this builtin might be supported. Are you using an old TFLite binary with a newer model?
ERROR: Registration failed.
Failed to initialize the interpreter
Benchmarking failed.
"""


# ------------------------------------------------------------------------------ the parser


def test_parse_log_with_percentiles() -> None:
    out = parse_benchmark_output(LOG_WITH_PERCENTILES)
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.inference_avg_us) == (
        5367, 58920, 53478.9, 50986.5,
    )  # fmt: skip
    assert out.inference is not None and out.inference.count == 20
    assert out.inference.values["median"] == 50822 and out.inference.values["p95"] == 53908
    assert out.warmup is not None and out.warmup.count == 3
    assert out.memory_mb == pytest.approx(9.87109)
    latency, notes = latency_from_output(out)
    assert latency == {
        "p50": 50.822, "p90": None, "p95": 53.908, "p99": None, "mean": 50.9865,
        "std": 1.012, "min": 49.713, "max": 53.908,
    }  # fmt: skip
    assert notes == ["benchmark_model does not report p90, p99: they are null"]


def test_parse_log_without_percentiles_uses_the_average_for_p50() -> None:
    out = parse_benchmark_output(LOG_WITHOUT_PERCENTILES)
    assert out.inference_avg_us == pytest.approx(2.95034e6)
    assert out.inference is not None and out.inference.count == 50
    assert out.warmup is not None and out.warmup.count == 1
    assert out.memory_mb == pytest.approx(138.809)
    latency, notes = latency_from_output(out)
    assert latency["p50"] == latency["mean"] == pytest.approx(2950.34)
    assert latency["p95"] is None and latency["min"] == pytest.approx(2727.568)
    assert "benchmark_model printed no percentiles; latency_ms.p50 is its average" in notes
    assert "benchmark_model does not report p90, p99, p95: they are null" in notes


def test_parse_logcat_lines_and_all_same_runs() -> None:
    out = parse_benchmark_output(LOG_LOGCAT)
    assert out.init_us == 92318 and out.inference is not None
    assert out.inference.values["median"] == 145102 and out.warmup is None
    same = parse_benchmark_output(
        "count=4 curr=1200(all same)\n"
        "Inference timings in us: Init: 10, First inference: 1300, Warmup (avg): 1300, "
        "Inference (avg): 1200\n"
    )
    latency, _ = latency_from_output(same)
    assert latency["p50"] == latency["min"] == latency["max"] == 1.2 and latency["std"] == 0


def test_parse_failed_run_is_its_error_line() -> None:
    with pytest.raises(RuntimeUnavailableError) as err:
        parse_benchmark_output(LOG_FAILED)
    assert str(err.value) == (
        "benchmark_model did not finish: ERROR: Didn't find op for builtin opcode 'CONV_2D' "
        "version '6'. An older version of this builtin might be supported. Are you using an "
        "old TFLite binary with a newer model?"
    )
    with pytest.raises(RuntimeUnavailableError, match="did not finish: no output"):
        parse_benchmark_output("")


# ------------------------------------------------------------------------------ fake adb


GETPROP = """#!/bin/sh
case "$1" in
  ro.product.manufacturer) echo Google ;;
  ro.product.model) echo "Pixel 7" ;;
  ro.build.version.release) echo 14 ;;
  ro.product.cpu.abi) echo arm64-v8a ;;
  ro.soc.model) echo "Tensor G2" ;;
  ro.board.platform) echo gs201 ;;
esac
"""

FAKE_BENCHMARK = """#!/bin/sh
printf '%s\\n' "$@" > "{args}"
for a in "$@"; do
  case "$a" in --graph=*) test -f "${{a#--graph=}}" || {{ echo "ERROR: Could not open '${{a#--graph=}}'."; exit 1; }} ;; esac
done
cat "{log}"
"""


class FakeAdbServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, devices: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _AdbHandler)
        self.devices = devices
        self.data_local_tmp = root / "data_local_tmp"
        self.data_local_tmp.mkdir(parents=True)
        self.bin = root / "bin"
        self.bin.mkdir()
        (self.bin / "getprop").write_text(GETPROP)
        (self.bin / "getprop").chmod(0o755)
        self.log = root / "benchmark.log"
        self.args = root / "benchmark.args"
        self.shell_commands: list[str] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    def install_benchmark(self, log: str, where: Path | None = None) -> Path:
        self.log.write_text(log)
        path = where or self.data_local_tmp / "benchmark_model"
        path.write_text(FAKE_BENCHMARK.format(args=self.args, log=self.log))
        path.chmod(0o755)
        return path

    def local(self, device_path: str) -> Path:
        assert device_path.startswith(DEVICE_DIR), device_path
        return Path(device_path.replace(DEVICE_DIR, str(self.data_local_tmp), 1))

    def run_shell(self, command: str) -> bytes:
        self.shell_commands.append(command)
        mapped = command.replace(DEVICE_DIR, str(self.data_local_tmp))
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '')}"}
        proc = subprocess.run(
            ["sh", "-c", mapped], cwd=self.data_local_tmp, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=60, check=False,
        )  # fmt: skip
        return proc.stdout


class _AdbHandler(socketserver.BaseRequestHandler):
    server: FakeAdbServer

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _block(self, text: str) -> bytes:
        data = text.encode()
        return f"{len(data):04x}".encode() + data

    def handle(self) -> None:
        self.request.settimeout(30)
        try:
            while True:
                command = self._read(int(self._read(4), 16)).decode()
                if not self._command(command):
                    return
        except (EOFError, OSError):
            return

    def _command(self, command: str) -> bool:
        """Answer one request; True if the connection goes on (after a transport switch)."""
        send = self.request.sendall
        if command == "host:version":
            send(b"OKAY" + self._block("0029"))  # adb server 41
        elif command in ("host:devices", "host:devices-l"):
            listing = "".join(f"{s}\t{state}\n" for s, state in self.server.devices.items())
            send(b"OKAY" + self._block(listing))
        elif command.startswith("host:tport:serial:"):
            serial = command.removeprefix("host:tport:serial:")
            if self.server.devices.get(serial) != "device":
                send(b"FAIL" + self._block(f"device '{serial}' not found"))
                return False
            send(b"OKAY" + struct.pack("<Q", 1))
            return True
        elif command.startswith("shell:"):
            send(b"OKAY" + self.server.run_shell(command.removeprefix("shell:")))
        elif command == "sync:":
            send(b"OKAY")
            self._sync()
        else:
            send(b"FAIL" + self._block(f"unsupported command {command}"))
        return False

    def _sync(self) -> None:
        while True:
            kind = self._read(4)
            (length,) = struct.unpack("<I", self._read(4))
            arg = self._read(length).decode()
            if kind == b"STAT":
                path = self.server.local(arg)
                st = path.stat() if path.exists() else None
                values = (st.st_mode, st.st_size, int(st.st_mtime)) if st else (0, 0, 0)
                self.request.sendall(b"STAT" + struct.pack("<III", *values))
            elif kind == b"SEND":
                remote, _, mode = arg.rpartition(",")
                data = b""
                while True:
                    chunk_kind = self._read(4)
                    (n,) = struct.unpack("<I", self._read(4))
                    if chunk_kind == b"DONE":
                        break
                    data += self._read(n)
                path = self.server.local(remote)
                path.write_bytes(data)
                path.chmod(int(mode) & 0o777)
                self.request.sendall(b"OKAY" + struct.pack("<I", 0))
            else:  # QUIT
                return


@pytest.fixture
def adb_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAdbServer]:
    server = FakeAdbServer(tmp_path / "adb", {SERIAL: "device", "R3CN-unauth": "unauthorized"})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(server.port))
    monkeypatch.delenv("ANDROID_ADB_SERVER_HOST", raising=False)
    monkeypatch.delenv("EDGEKIT_ADB_BENCHMARK", raising=False)
    monkeypatch.delenv("EDGEKIT_ADB_PUSH_BENCHMARK", raising=False)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ bench_adb


def test_cli_bench_through_adb(
    adb_server: FakeAdbServer, tiny_tflite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adb_server.install_benchmark(LOG_WITH_PERCENTILES)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(tiny_tflite), "--device", f"adb://{SERIAL}", "--json", "--runs", "20",
              "--warmup", "3", "--threads", "2"])  # fmt: skip
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    result = json.loads(out)
    assert BENCH_KEYS | {"device", "notes"} <= set(result)
    assert result["latency_ms"]["p50"] == 50.822 and result["latency_ms"]["p90"] is None
    assert (result["runs"], result["warmup"]) == (20, 3)
    assert (result["load_ms"], result["first_ms"], result["peak_rss_mb"]) == (5.367, 58.92, 9.9)
    assert result["host"] == {
        "cpu": "Tensor G2", "cores": os.cpu_count(), "machine": "arm64-v8a",
        "system": "Android 14",
    }  # fmt: skip
    assert result["device"] == {
        "uri": f"adb://{SERIAL}", "transport": "adb", "serial": SERIAL, "model": "Google Pixel 7",
    }  # fmt: skip
    assert result["artifact"]["path"] == str(tiny_tflite)
    assert result["artifact"]["input_shape"] == [1, 16, 16, 3]
    assert result["runtime"]["input_dtype"] == "float32"
    assert result["runtime"]["binary"] == f"{DEVICE_DIR}/benchmark_model"
    args = adb_server.args.read_text().split()
    assert "--num_runs=20" in args and "--warmup_runs=3" in args and "--num_threads=2" in args
    assert "--min_secs=0" in args and "--warmup_min_secs=0" in args
    assert args[0].startswith("--graph=") and args[0].endswith("/model.tflite")
    # The model's folder was removed; the benchmark binary stays where the user put it.
    assert sorted(p.name for p in adb_server.data_local_tmp.iterdir()) == ["benchmark_model"]


def test_old_log_without_percentiles_says_p50_is_the_average(
    adb_server: FakeAdbServer, tiny_tflite: Path
) -> None:
    adb_server.install_benchmark(LOG_WITHOUT_PERCENTILES)
    result = bench_on_device(f"adb://{SERIAL}", tiny_tflite, runs=50, warmup=1, device="gpu")
    assert result["latency_ms"]["p50"] == result["latency_ms"]["mean"] == 2950.34
    assert (
        "benchmark_model printed no percentiles; latency_ms.p50 is its average" in result["notes"]
    )
    assert "--use_gpu=true" in adb_server.args.read_text().split()
    assert result["runtime"]["delegate"] == "gpu"


def test_pushed_binary_and_binary_option(
    adb_server: FakeAdbServer, tiny_tflite: Path, tmp_path: Path
) -> None:
    local = adb_server.install_benchmark(LOG_WITH_PERCENTILES, tmp_path / "benchmark_model")
    result = bench_adb(f"adb://{SERIAL}", tiny_tflite, runs=20, warmup=3, push_binary=local)
    assert result["runtime"]["binary"].startswith(f"{DEVICE_DIR}/edgekit-")
    assert result["runtime"]["binary"].endswith("/benchmark_model")
    assert list(adb_server.data_local_tmp.iterdir()) == []  # pushed binary removed with its folder
    elsewhere = adb_server.install_benchmark(
        LOG_WITH_PERCENTILES, adb_server.data_local_tmp / "bm2"
    )
    result = bench_on_device(
        f"adb://{SERIAL}", tiny_tflite, runs=20, benchmark_binary=f"{DEVICE_DIR}/{elsewhere.name}"
    )
    assert result["runtime"]["binary"] == f"{DEVICE_DIR}/bm2"


def test_failed_run_is_one_line_with_the_tools_error(
    adb_server: FakeAdbServer, tiny_tflite: Path
) -> None:
    adb_server.install_benchmark(LOG_FAILED)
    with pytest.raises(RuntimeUnavailableError) as err:
        bench_adb(f"adb://{SERIAL}", tiny_tflite, runs=5)
    assert str(err.value).startswith(
        f"on adb device '{SERIAL}' (exit 0): benchmark_model did not finish: ERROR: Didn't find "
        "op for builtin opcode 'CONV_2D'"
    )


def test_no_benchmark_binary_on_the_device(adb_server: FakeAdbServer, tiny_tflite: Path) -> None:
    with pytest.raises(RuntimeUnavailableError) as err:
        bench_adb(f"adb://{SERIAL}", tiny_tflite, runs=5)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"no LiteRT benchmark binary at {DEVICE_DIR}/benchmark_model on adb device '{SERIAL}'; "
        "get benchmark_model for arm64-v8a"
    )
    assert "EDGEKIT_ADB_PUSH_BENCHMARK" in message
    assert list(adb_server.data_local_tmp.iterdir()) == []


def test_unknown_serial_and_unauthorized_device(
    adb_server: FakeAdbServer, tiny_tflite: Path
) -> None:
    with pytest.raises(RuntimeUnavailableError) as err:
        bench_adb("adb://nope-123", tiny_tflite, runs=5)
    assert str(err.value) == (
        f"no device with serial 'nope-123' on the adb server at 127.0.0.1:{adb_server.port}; "
        f"it lists: R3CN-unauth (unauthorized), {SERIAL} (device) (see `adb devices`; a device "
        "over TCP needs `adb connect nope-123` first)"
    )
    with pytest.raises(RuntimeUnavailableError) as err:
        bench_adb("adb://R3CN-unauth", tiny_tflite, runs=5)
    assert str(err.value) == (
        "adb device 'R3CN-unauth' is unauthorized; unlock it and accept the USB debugging prompt"
    )


def test_no_adb_server_is_one_line_and_starts_none(
    tiny_tflite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adbutils

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("adbutils must not be used (it would start an adb server)")

    monkeypatch.setattr(adbutils, "AdbClient", refuse)
    port = _closed_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    t0 = time.monotonic()
    with pytest.raises(RuntimeUnavailableError) as err:
        bench_on_device(f"adb://{SERIAL}", tiny_tflite, connect_timeout_s=2)
    assert time.monotonic() - t0 < 5
    assert str(err.value) == (
        f"no adb server at 127.0.0.1:{port} (connection refused); start it with "
        f"`adb start-server` and check that `adb devices` lists '{SERIAL}'"
    )


def test_bad_input_is_refused_before_adb(tmp_path: Path, tiny_tflite: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07" + b"\x00" * 16)
    with pytest.raises(BadInputError, match=r"adb:// measures \.tflite models .* 'm\.onnx' is a"):
        bench_adb(f"adb://{SERIAL}", onnx)
    with pytest.raises(BadInputError, match="unknown --device 'npu' for adb://; use one of cpu"):
        bench_adb(f"adb://{SERIAL}", tiny_tflite, device="npu")
    with pytest.raises(BadInputError, match="--identity does not apply to adb://"):
        bench_on_device(f"adb://{SERIAL}", tiny_tflite, identity=tmp_path / "id")
    with pytest.raises(BadInputError, match="to push does not exist"):
        bench_adb(f"adb://{SERIAL}", tiny_tflite, push_binary=tmp_path / "nope")


def test_adb_health_in_the_devices_list(adb_server: FakeAdbServer, tmp_path: Path) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(
        f'[[device]]\nname = "pixel"\nuri = "adb://{SERIAL}"\n'
        '[[device]]\nname = "locked"\nuri = "adb://R3CN-unauth"\n'
    )
    rows = {r["name"]: r for r in list_devices(devices, include_local=False)}
    assert rows["pixel"] == {
        "name": "pixel", "uri": f"adb://{SERIAL}", "kind": "adb", "healthy": True,
        "detail": "device (Google Pixel 7, Android 14, arm64-v8a)",
    }  # fmt: skip
    assert not rows["locked"]["healthy"] and "is unauthorized" in rows["locked"]["detail"]


# ------------------------------------------------------------------------------ real device


def _real_serial() -> str | None:
    serial = os.environ.get("EDGEKIT_ANDROID_SERIAL")
    if not serial:
        return None
    host, port = _adb.adb_server_address()
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return None
    return serial


@pytest.mark.android
@pytest.mark.skipif(
    _real_serial() is None,
    reason="needs an Android device: set EDGEKIT_ANDROID_SERIAL, run `adb start-server`, and "
    "put benchmark_model in /data/local/tmp (or set EDGEKIT_ADB_PUSH_BENCHMARK)",
)
def test_real_android_device(tiny_tflite: Path) -> None:
    result = bench_adb(f"adb://{_real_serial()}", tiny_tflite, runs=20, warmup=2)
    lat = result["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["max"]
    assert result["host"]["system"].startswith("Android ")
