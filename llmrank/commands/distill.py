"""``llmrank distill``: train a student from a recipe, or from flags.

The flags are made from the student kind's config (:mod:`llmrank.students`): its own fields (model, prompt,
loss, LoRA …) and the common training-loop fields of transformers' ``TrainingArguments`` / trl's
``SFTConfig``, with the same defaults and help as a recipe's ``distill`` section — there is no second set.
Any other training field: ``--set training.FIELD=VALUE``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from llmrank.checks import positive_int
from llmrank.errors import LlmrankError

NAME = "distill"
HELP = "Distil a teacher run into a LoRA student (from a recipe, or from flags)."
_SKIP = {"merge"}  # always on from the CLI: a student is saved as adapter and merged model


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(annotation):
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is not None and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return _parse_bool
    if annotation in (int, float):
        return annotation
    if annotation is dict or typing.get_origin(annotation) is dict:
        import json

        return json.loads
    return str


def add_arguments(p) -> None:
    from llmrank.configs import library_fields
    from llmrank.students import STUDENT_KINDS, get_student

    p.add_argument("recipe", nargs="?", help="a recipe YAML: runs its teach and distill stages (other flags ignored)")
    p.add_argument("--kind", default="pointwise", choices=list(STUDENT_KINDS), help="student kind (default: pointwise)")
    p.add_argument("--dataset", help="training dataset (BEIR dir, candidates JSON, jsonl …)")
    p.add_argument("--split", default="train", help="training split (default: train)")
    p.add_argument("--teacher", help="teacher run jsonl (from `llmrank teach`); or --oracle")
    p.add_argument("--oracle", action="store_true", help="use the dataset's qrels as the teacher (pointwise)")
    p.add_argument("--top-k", type=positive_int, default=20, help="first-stage depth for the oracle teacher (default: 20)")
    p.add_argument("--queries", type=positive_int, default=None, help="first N training queries (default: all)")
    p.add_argument("-o", "--output-dir", default="runs/distill",
                   help="where the student is saved: adapter/ and merged/ (default: runs/distill)")
    p.add_argument("--overwrite", action="store_true", help="write into --output-dir even if llmrank did not create it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with a recipe: any recipe key; with flags: training.FIELD=VALUE for any training field")
    # one flag per field; its default per kind, when the kinds differ
    flags: dict[str, dict] = {}
    for kind in STUDENT_KINDS:
        student = get_student(kind)
        hints = typing.get_type_hints(student.fields)
        for f in dataclasses.fields(student.fields):
            if f.name in _SKIP:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            e = flags.setdefault(f.name, {"help": f.metadata.get("help", ""), "type": _converter(hints[f.name]),
                                          "defaults": {}, "group": "student"})
            e["defaults"][kind] = default
        schema = library_fields(student.base_config)
        for name in student.cli_fields():
            if name in schema:
                spec = schema[name]
                e = flags.setdefault(name, {"help": spec.help, "type": _converter(_annotation(spec.annotation)),
                                            "defaults": {}, "group": "training"})
                e["defaults"][kind] = student.training_defaults.get(name, spec.default)
    groups = {"student": p.add_argument_group("the student (a recipe's distill section)"),
              "training": p.add_argument_group("training (TrainingArguments / trl SFTConfig fields; "
                                               "others with --set training.FIELD=VALUE)")}
    for name, e in flags.items():
        values = set(map(repr, e["defaults"].values()))
        if len(values) == 1 and len(e["defaults"]) == len(STUDENT_KINDS):
            shown = next(iter(values))
        else:
            shown = "; ".join(f"{k}: {v!r}" for k, v in e["defaults"].items())
        groups[e["group"]].add_argument(_flag(name), dest=name, type=e["type"], default=None,
                                        help=f"{e['help']} (default: {shown})".replace("%", "%%"))


def _annotation(text: str):
    from llmrank.configs import _annotation as parse

    return parse(text)


def _section(args):
    """The flags as a recipe ``distill`` section of ``args.kind``, validated like a recipe's."""
    from llmrank.configs import check_fields, library_fields
    from llmrank.recipe import DISTILL_SECTIONS, _yaml_load, sync_schema
    from llmrank.students import get_student

    sync_schema()  # kinds registered since the recipe schema was built
    student = get_student(args.kind)
    model = DISTILL_SECTIONS[args.kind]
    values: dict = {"kind": args.kind}
    own = set(model.model_fields) | {"lora_r", "lora_alpha", "lora_dropout", "target_modules"} | set(student.cli_fields())
    for name in ("loss", "loss_options", "group_size", "qlora", "max_new_tokens", "top_m", "min_grade"):
        if getattr(args, name, None) is not None and name not in own:
            raise LlmrankError(f"{_flag(name)} is not a setting of a {args.kind} student")
    for name in model.model_fields:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    lora = {}
    for key, field in (("r", "lora_r"), ("alpha", "lora_alpha"), ("dropout", "lora_dropout"),
                       ("target_modules", "target_modules")):
        if getattr(args, field, None) is not None:
            lora[key] = getattr(args, field)
            values.pop(field, None)
    if lora:
        defaults = model.model_fields["lora"].default_factory()  # type: ignore[misc]
        values["lora"] = {**defaults, **lora}
    training = {n: getattr(args, n) for n in student.cli_fields() if getattr(args, n, None) is not None}
    for o in args.overrides:
        key, sep, value = o.partition("=")
        if not sep or not key.startswith("training."):
            raise LlmrankError(f"--set {o!r}: without a recipe, --set takes training.FIELD=VALUE")
        training[key[len("training."):]] = _yaml_load(value)
    values["training"] = training
    from pydantic import ValidationError

    try:
        section = model.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        raise LlmrankError(f"--{key.replace('_', '-')}: {err['msg']} (got {err.get('input')!r})") from None
    problems = check_fields(library_fields(student.base_config), training, student.base_config)
    problems += student.check_section(section)
    if problems:
        raise LlmrankError("; ".join(f"{_flag(k)}: {m}" for k, m in problems))
    return student, section


def run(args) -> int:
    if args.recipe:
        from llmrank.recipe import load_recipe
        from llmrank.runner import Runner

        runner = Runner(load_recipe(args.recipe, args.overrides))
        if runner.recipe.distill is None:
            raise LlmrankError(f"{args.recipe}: the recipe has no 'distill' section")
        runner.run("teach")
        runner.run("distill")
        return 0
    if not args.dataset or not (args.teacher or args.oracle):
        raise LlmrankError("give a recipe, or --dataset with --teacher TEACHER.jsonl or --oracle")
    student, section = _section(args)  # every flag is checked before any data is read
    from llmrank.models import check_model
    from llmrank.outputs import begin_dir, check_dir, check_output, record_dir

    check_output(args.output_dir, "distill", args.overwrite, inputs=[args.dataset] + ([args.teacher] if args.teacher else []))
    users = check_dir(args.output_dir, "distill", args.overwrite)  # with --overwrite: kept, never recorded as ours
    check_model(section.model)
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates
    from llmrank.teacher import read_teacher_run

    data = load_dataset(args.dataset, args.split).first_queries(args.queries)
    if args.oracle:
        from llmrank.rerankers.oracle import OracleReranker

        if not data.qrels:
            raise LlmrankError(f"{args.dataset}: --oracle needs judgements for split '{args.split}'")
        cands = ensure_candidates(data, args.top_k).subset(data.queries).top(args.top_k)
        _, rankings = OracleReranker(data.qrels).rerank_all(data, cands, args.top_k, progress=False)
        teacher = {q: {"qid": q, "ranking": r.docids, "scores": r.scores} for q, r in rankings.items()}
    else:
        whole = read_teacher_run(args.teacher)
        teacher = {q: rec for q, rec in whole.items() if q in data.queries}
        if whole and not teacher:
            raise LlmrankError(f"{args.teacher}: none of its {len(whole)} query ids is in {args.dataset} split "
                               f"'{args.split}' (first teacher qid: {next(iter(whole))}); was it taught on another dataset?")
    from llmrank.outputs import FolderLock
    from llmrank.recipe import Recipe
    from llmrank.stages import distill

    # the recipe's seed (a recipe without one: its default); --set training.seed=N seeds everything here
    seed = section.training.get("seed", Recipe.model_fields["seed"].default)
    with FolderLock(args.output_dir, "llmrank distill"):  # one trainer per folder
        begin_dir(args.output_dir, "distill")
        distill(student, section, data, teacher, args.output_dir, seed)
        record_dir(args.output_dir, "distill", keep=users)
    out = Path(args.output_dir)
    print(f"student saved to {out / 'adapter'} and {out / 'merged'}", file=sys.stderr)
    return 0
