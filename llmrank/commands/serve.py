from __future__ import annotations

import shlex
import signal
import sys
import time

from llmrank.errors import LlmrankError

NAME = "serve"
HELP = "Serve an exported student (or a model) with vLLM's OpenAI-compatible server: /rerank for pointwise students."


def add_arguments(p) -> None:
    p.add_argument("model", metavar="DIR",
                   help="an export folder from `llmrank export` (pointwise: /rerank and /score; reasoning: generation), "
                        "or a checkpoint folder / model alias to serve for /v1/completions")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, loopback only; 0.0.0.0 exposes the server to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--python", default=None,
                   help="python with vLLM (default: $LLMRANK_VLLM_PYTHON, <repo>/.venv-vllm/bin/python, this python)")
    p.add_argument("--max-model-len", type=int, default=None, help="longest prompt in tokens (default: the model's)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 | auto (default: the export's dtype)")
    p.add_argument("--runner", choices=["pooling", "generate"], default=None,
                   help="default: pooling for a pointwise export, generate otherwise")
    p.add_argument("--served-model-name", default=None, help="name clients send as `model` (default: the folder's name)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server to answer /health")
    p.add_argument("--vllm-args", default="", help="more arguments for vLLM, as one quoted string")
    p.add_argument("--log-file", default=None, help="also write the server's log here")
    p.add_argument("-q", "--quiet", action="store_true", help="do not echo the server's log")
    p.add_argument("--dry-run", action="store_true", help="print the command and environment, start nothing")


def build_server(args):
    from llmrank.serve.launch import VLLMServer

    return VLLMServer(args.model, port=args.port or None, host=args.host, python=args.python, runner=args.runner,
                      dtype=args.dtype, max_model_len=args.max_model_len, served_model_name=args.served_model_name,
                      extra_args=shlex.split(args.vllm_args), startup_timeout=args.timeout, echo=not args.quiet,
                      log_file=args.log_file)


def run(args) -> int:
    from llmrank.serve.launch import is_loopback

    server = build_server(args)
    env = {k: server.env[k] for k in ("VLLM_CPU_KVCACHE_SPACE",) if k in server.env}
    if args.dry_run:
        print(" ".join(f"{k}={v}" for k, v in env.items()) + (" " if env else "") + shlex.join(server.command))
        return 0
    if not is_loopback(args.host):
        print(f"warning: binding {args.host}: the server is reachable from other machines and checks no credentials",
              file=sys.stderr)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    print(f"starting vLLM ({server.vllm.source}: {server.vllm.path}, vllm {server.vllm.version}) for "
          f"{server.spec.model_dir} [{server.spec.runner}, {server.spec.dtype}] …", file=sys.stderr)
    try:
        server.start()
        server.wait_until_ready()
        spec = server.spec
        print(f"serving {spec.model_dir} as model '{server.served_model_name}' at {server.url} "
              f"(ready in {server.startup_seconds:.0f} s; Ctrl-C stops it)", flush=True)
        if spec.runner == "pooling":
            print(f"  POST {server.url}/rerank  {{\"model\": \"{server.served_model_name}\", \"query\": …, \"documents\": […]}}\n"
                  f"  llmrank rerank DATASET --backend {server.url} --method served --model {spec.model_dir} -o run.trec",
                  flush=True)
        else:
            print(f"  OpenAI base URL {server.base_url}  (llmrank … --backend {server.url} "
                  f"--model {spec.model_dir})", flush=True)
        while server.running():
            time.sleep(0.5)
        code = server.proc.returncode if server.proc else None
        raise LlmrankError(f"the vLLM server exited with status {code}; its last lines:\n{server.log_tail()}")
    except KeyboardInterrupt:
        print("stopping the vLLM server …", file=sys.stderr)
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
