"""The shipped models' recipes: the training jobs ``models build-default`` runs, stage by stage."""

from __future__ import annotations

from pathlib import Path

from models.default_model import QUICK, RECIPES, DefaultRecipe


def test_a_finetune_stage_starts_from_the_first_stages_weights_on_fresh_parts(tmp_path: Path) -> None:
    recipe = RECIPES["machined"]
    (stage2,) = recipe.finetune
    first, second = recipe.job_specs(tmp_path)
    assert first.model == recipe.arch and first.epochs == recipe.epochs
    assert first.export_path == str(tmp_path / "stage1.onnx")
    # stage 2: the weights exported next to stage 1's ONNX, another line seed, a lower rate, no warm-up
    assert second.model == str(tmp_path / "stage1.pt") and second.epochs == stage2.epochs
    assert second.synthetic is not None and first.synthetic is not None
    assert second.synthetic["seed"] == stage2.train_seed != first.synthetic["seed"]
    assert {k: v for k, v in second.synthetic.items() if k != "seed"} == {
        k: v for k, v in first.synthetic.items() if k != "seed"
    }
    assert second.hyp["lr0"] == stage2.lr0 < first.hyp["lr0"] and second.hyp["warmup_epochs"] == 0
    assert {k: v for k, v in second.hyp.items() if k not in ("lr0", "warmup_epochs")} == {
        k: v for k, v in first.hyp.items() if k not in ("lr0", "warmup_epochs")
    }
    assert second.export_path == str(tmp_path / "model.onnx") and second.export_imgsz == first.export_imgsz
    assert second.lineage["stage"] == 2


def test_each_product_has_its_own_parts_and_a_single_stage_recipe_has_one_job(tmp_path: Path) -> None:
    machined, pcb = RECIPES["machined"], RECIPES["pcb"]
    assert pcb.product == "pcb" and pcb.finetune and machined.finetune
    assert pcb.finetune[0].train_seed != machined.finetune[0].train_seed
    assert pcb.job_specs(tmp_path)[-1].synthetic["camera"]["product"] == "pcb"  # type: ignore[index]
    (only,) = DefaultRecipe().job_specs(tmp_path)
    assert only.model == "yolov8n.yaml" and only.export_path == str(tmp_path / "model.onnx")
    assert len(QUICK.job_specs(tmp_path)) == 2  # the smoke run (--quick) runs both stages


def test_later_stages_chain_and_may_train_at_full_resolution(tmp_path: Path) -> None:
    """pcb: stage 2 at half scale, then two stages on full-resolution windows, each from the one before it;
    the model is exported (and shipped) at the last stage's input size."""
    recipe = RECIPES["pcb"]
    specs = recipe.job_specs(tmp_path)
    assert len(specs) == 1 + len(recipe.finetune) == 4
    for k, (prev, spec, ft) in enumerate(zip(specs, specs[1:], recipe.finetune), start=2):
        assert spec.model == str(tmp_path / f"stage{k - 1}.pt") and Path(prev.export_path or "").stem == f"stage{k - 1}"
        assert spec.synthetic is not None and spec.synthetic["seed"] == ft.train_seed and spec.epochs == ft.epochs
        hw, crop = ft.input_hw or recipe.input_hw, ft.crop or recipe.crop
        assert spec.synthetic["view"]["input_hw"] == list(hw) and spec.synthetic["view"]["crop"] == spec.imgsz == crop
        assert spec.export_imgsz == hw and spec.lineage["stage"] == k
    assert specs[1].export_imgsz == recipe.input_hw == (416, 640) and specs[-1].export_imgsz == (800, 1280)
    assert specs[-1].export_path == str(tmp_path / "model.onnx") and recipe.deploy_hw == (800, 1280)
    assert len({s.synthetic["seed"] for s in specs if s.synthetic}) == 4  # fresh boards at every stage
    assert RECIPES["machined"].deploy_hw == (416, 640)
    assert recipe.as_dict()["finetune"][-1]["input_hw"] == [800, 1280]


def test_a_finished_job_matches_its_recipe_even_when_the_camera_has_gained_a_setting(tmp_path: Path) -> None:
    """``models build-default --from-job``: a job recorded before a camera setting existed still matches the
    recipe (the setting at its default), and one trained otherwise is refused with what differs."""
    import json

    from models.default_model import recipe_differs

    recipe = RECIPES["pcb"]
    spec = json.loads(json.dumps(recipe.job_specs(tmp_path)[-1].as_dict()))
    assert recipe_differs(spec, recipe) == []
    del spec["synthetic"]["camera"]["defects_on_features"]  # as written before that setting existed
    assert recipe_differs(spec, recipe) == []
    spec["synthetic"]["camera"]["defects_on_features"] = 0.5
    spec["epochs"] += 1
    assert recipe_differs(spec, recipe) == ["epochs", "synthetic"]


def test_belt_zones_cover_the_belt_and_never_a_defect_on_the_part() -> None:
    """The pcb model's ignore zones: outside the widest the board reaches under the line's jitter and rotation,
    so no drawn defect (200 parts) lies in them by more than a sliver; only what lies mostly on the belt is ignored."""
    from models.default_model import belt_zones, part_extent
    from station.acquire.synthetic import iter_parts
    from station.config.camera import SyntheticCameraConfig

    cam = SyntheticCameraConfig(product="pcb", defect_rate=1.0, seed=31)
    x1, y1, x2, y2 = part_extent(cam)
    assert 0 < x1 < x2 < cam.width and 0 < y1 < y2 < cam.height
    zones = belt_zones(cam)
    assert RECIPES["pcb"].shipped_rules().model_dump(mode="json")["ignore_zones"] == [
        {**z, "camera_id": None, "min_overlap": 0.5} for z in zones
    ]
    n = 0
    for _, part in iter_parts(cam, 0, 200):
        for d in part.truth:
            bx0, by0, bx1, by1 = d.box_xyxy
            for z in zones:  # a scratch's box may reach a few px past the board edge; the decider ignores >= 50 %
                inside = max(0.0, min(bx1, z["x2"]) - max(bx0, z["x1"])) * max(
                    0.0, min(by1, z["y2"]) - max(by0, z["y1"])
                )
                assert inside <= 0.1 * (bx1 - bx0) * (by1 - by0), (d, z)
            n += 1
    assert n > 250


def test_retest_rewrites_the_cards_test_at_the_recipes_rules_and_refuses_another_model(tmp_path: Path) -> None:
    """``models build-default --retest``: the shipped file tested again at the rules it now ships with."""
    import json
    import shutil
    from dataclasses import replace

    import pytest

    from models import SHIPPED_DIRS
    from models.default_model import retest_default

    out = tmp_path / "pcb"
    shutil.copytree(SHIPPED_DIRS["pcb"], out)
    before = json.loads((out / "model.json").read_text())
    strict = {"default": {"reject_conf": 0.4, "uncertain_conf": 0.2}, "uncertain_action": "reject"}
    recipe = replace(RECIPES["pcb"], n_test=6, rules=strict)
    card = retest_default(out, tmp_path / "work", recipe)
    assert card == json.loads((out / "model.json").read_text())
    assert card["test"]["n"] == 6 and card["test"]["metrics"]["n_images"] == 6
    assert card["test"]["rules"] == recipe.shipped_rules().model_dump(mode="json")
    assert card["training"]["recipe"]["rules"] == strict
    assert {k: v for k, v in card.items() if k != "test" and k != "training"} == {
        k: v for k, v in before.items() if k != "test" and k != "training"
    }
    with (out / "model.onnx").open("ab") as f:  # not the model the card describes any more
        f.write(b"\0")
    with pytest.raises(RuntimeError, match="sha256 differs"):
        retest_default(out, tmp_path / "work", recipe)
