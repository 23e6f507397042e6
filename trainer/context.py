"""The run context: what every part of a training run reads (the flags, this process, what the run writes),
built once at start-up and passed whole instead of piece by piece. Library module:
    run = start_run("lora", argv, description)          # trainer/stage.py: cfg, dist, say
    run.writes(path, save_model, meta)                  # the stage entry point, once it knows its artefact
    finish_run(run, model, train_set, val_set, collate) # -> trainer/loop.py train(run, model, ...)
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from checkpoint import layout
from trainer.args import TrainConfig
from trainer.distributed import Dist


@dataclass
class Run:
    """One training run, as the stage set-up, the loop and its parts see it."""
    cfg: TrainConfig                         # the resolved flags (trainer/args.py); stored in every save
    dist: Dist                               # this process: rank, world size, device (trainer/distributed.py)
    say: Callable = print                    # prints on rank 0 only
    path: Optional[Path] = None              # the stage's artefact (a checkpoint or an adapter)
    save_model: Optional[Callable] = None    # save_model(model, meta) writes it (rank 0 only), returns path
    meta: dict = field(default_factory=dict)  # stage, parent, parent_sha256, ...: recorded in every save
    objective: Optional[object] = None       # what a step optimises; None = cross-entropy (trainer/step.py)

    def writes(self, path, save_model, meta):
        """What the run produces: the artefact at `path`, written by save_model(model, meta), with `meta`
        (stage_meta) in it. The loop adds step, tokens, losses and the train config to the meta."""
        self.path, self.save_model, self.meta = path, save_model, meta

    @property
    def name(self):
        """The run's name, the artefact's (pretrain_512, lora_music_512): its log and states carry it."""
        return layout.run_name(self.path)

    @property
    def out(self):
        """The out/ folder (--out_dir)."""
        return layout.out_dir(self.cfg.out_dir)
