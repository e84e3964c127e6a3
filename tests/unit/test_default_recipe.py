"""The shipped models' recipes: the training jobs ``models build-default`` runs, stage by stage."""

from __future__ import annotations

from pathlib import Path

from models.default_model import QUICK, RECIPES, DefaultRecipe, FinetuneStage


def test_a_finetune_stage_starts_from_the_first_stages_weights_on_fresh_parts(tmp_path: Path) -> None:
    recipe = RECIPES["machined"]
    assert isinstance(recipe.finetune, FinetuneStage)
    first, second = recipe.job_specs(tmp_path)
    assert first.model == recipe.arch and first.epochs == recipe.epochs
    assert first.export_path == str(tmp_path / "stage1.onnx")
    # stage 2: the weights exported next to stage 1's ONNX, another line seed, a lower rate, no warm-up
    assert second.model == str(tmp_path / "stage1.pt") and second.epochs == recipe.finetune.epochs
    assert second.synthetic is not None and first.synthetic is not None
    assert second.synthetic["seed"] == recipe.finetune.train_seed != first.synthetic["seed"]
    assert {k: v for k, v in second.synthetic.items() if k != "seed"} == {
        k: v for k, v in first.synthetic.items() if k != "seed"
    }
    assert second.hyp["lr0"] == recipe.finetune.lr0 < first.hyp["lr0"] and second.hyp["warmup_epochs"] == 0
    assert {k: v for k, v in second.hyp.items() if k not in ("lr0", "warmup_epochs")} == {
        k: v for k, v in first.hyp.items() if k not in ("lr0", "warmup_epochs")
    }
    assert second.export_path == str(tmp_path / "model.onnx") and second.export_imgsz == first.export_imgsz
    assert second.lineage["stage"] == 2


def test_each_product_has_its_own_parts_and_a_single_stage_recipe_has_one_job(tmp_path: Path) -> None:
    machined, pcb = RECIPES["machined"], RECIPES["pcb"]
    assert pcb.product == "pcb" and pcb.finetune is not None and machined.finetune is not None
    assert pcb.finetune.train_seed != machined.finetune.train_seed
    assert pcb.job_specs(tmp_path)[-1].synthetic["camera"]["product"] == "pcb"  # type: ignore[index]
    (only,) = DefaultRecipe().job_specs(tmp_path)
    assert only.model == "yolov8n.yaml" and only.export_path == str(tmp_path / "model.onnx")
    assert len(QUICK.job_specs(tmp_path)) == 2  # the smoke run (--quick) runs both stages
