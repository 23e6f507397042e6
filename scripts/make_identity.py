"""Make the self-identity chat set (who are you, who made you, are you ChatGPT...) in English and Chinese.

    python scripts/make_identity.py --name TinyMind --creator "the TinyMind project"
    python scripts/make_identity.py --name Melody --creator "Ada Lab" --creator_zh "Ada 实验室" --out_dir my_data
    python scripts/make_identity.py --persona personas/music_tutor.yaml --out_dir my_data   # the persona's identity

Writes OUT_DIR/identity.jsonl (training conversations) and OUT_DIR/identity_test.jsonl: held-out
questions whose phrasings never occur in the training file (they come from disjoint template lists),
one per line as {"conversations": [{"role": "user", "content": q}], "ask": "name"|"creator"|"other"}
(what the question asks, which decides how evaluation/scoring.py judges the answer), for
`python eval_model.py --identity_test`. Every record of both files carries "identity": {"name", "creator",
"creator_zh"}, so the identity travels with the data through any mix or split into the adapter's record,
where eval_model.py reads what to check; training records of name, creator and "are you X" questions carry
their "ask" too. Every answer names NAME and CREATOR and denies being another assistant. The output is a
pure function of the flags and --seed. With --persona FILE (chat/persona.py) the name and creators are the
persona's and its example exchanges join the training conversations, so that a LoRA trained on the file and
the persona's system prompt (eval_model.py --persona FILE) agree. The templates and the writer are in
pipelines/data_build/identity.py; this is the command.
"""
from chat.persona import load_persona
from checkpoint import layout
from core.cli import ArgumentParser, run_cli
from core.atomic import check_writable
from core.errors import UserError
from core.ownership import check_outputs
from pipelines.data_build.identity import write_identity


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default=None, help="the assistant's name, used in every answer (default TinyMind)")
    p.add_argument("--creator", default=None, help="who made it (English answers; default: the TinyMind project)")
    p.add_argument("--creator_zh", default=None, help="who made it in Chinese answers (default: --creator)")
    p.add_argument("--persona", default=None, metavar="FILE",
                   help="take the name, creators and example exchanges from a persona file (personas/*.yaml)")
    p.add_argument("--out_dir", default=str(layout.repo_root() / "dataset"),
                   help="where identity.jsonl and identity_test.jsonl go (default: dataset/, replacing the shipped ones)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    check_writable(args.out_dir, folder=True)           # a file where the folder goes: one line
    check_outputs([("--out_dir", f"{args.out_dir}/{name}") for name in ("identity.jsonl", "identity_test.jsonl")],
                  [("--persona", args.persona)])
    examples = ()
    if args.persona:
        given = [f"--{f}" for f in ("name", "creator", "creator_zh") if getattr(args, f) is not None]
        if given:
            raise UserError(f"--persona sets the identity: leave out {', '.join(given)} (or edit the persona file)")
        persona = load_persona(args.persona)
        args.name, args.creator, args.creator_zh = persona.name, persona.creator, persona.identity["creator_zh"]
        examples = persona.examples
    args.name = "TinyMind" if args.name is None else args.name
    args.creator = "the TinyMind project" if args.creator is None else args.creator
    if not args.name.strip() or not args.creator.strip():
        raise UserError("--name and --creator must not be empty; e.g. --name Melody --creator \"Ada Lab\"")
    creator_zh = args.creator_zh
    if creator_zh is None and args.creator == "the TinyMind project" and args.name == "TinyMind":
        creator_zh = "TinyMind 项目"  # the default identity reads naturally in Chinese too
    n_train, n_test = write_identity(args.out_dir, args.name.strip(), args.creator.strip(),
                                     creator_zh and creator_zh.strip(), args.seed, examples)
    print(f"wrote {args.out_dir}/identity.jsonl ({n_train} conversations) and "
          f"{args.out_dir}/identity_test.jsonl ({n_test} held-out questions)")


if __name__ == "__main__":
    run_cli(main)
