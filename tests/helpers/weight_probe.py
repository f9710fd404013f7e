"""A callback for the multi-process tests: each rank writes a digest of its weights when training ends."""

import hashlib
import json
from pathlib import Path

from lightning.pytorch import Callback


class WeightProbe(Callback):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        digest = hashlib.sha256()
        for name, value in sorted(pl_module.state_dict().items()):
            digest.update(name.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "step": trainer.global_step}
        record["weights"] = digest.hexdigest()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
