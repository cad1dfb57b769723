"""PromptSRC through the protocol scripts on the Demo dataset: base-to-novel training (with the Gaussian
prompt aggregation and the run's config.yaml) and the novel-class evaluation."""
import os
import re

import torch

from promptsrc_testutils import DEMO_EPOCHS, demo_base2new_run


def test_base2new_train_and_test_scripts_run_promptsrc(tmp_path_factory):
    run = demo_base2new_run(tmp_path_factory)
    assert re.search(r"^base accuracy: \d+(\.\d)?%$", run["log"], re.M), run["log"][-2000:]
    train_dir = run["train_dir"]
    with open(os.path.join(train_dir, "log.txt")) as f:
        log = f.read()
    assert "Using GPA model for final inference..." in log and "Finish training" in log
    with open(os.path.join(train_dir, "config.yaml")) as f:
        config = f.read()
    assert re.search(r"^  NAME: PromptSRC$", config, re.M) and "SUBSAMPLE_CLASSES: base" in config
    checkpoint = torch.load(os.path.join(train_dir, "VLPromptLearner", f"model.pth.tar-{DEMO_EPOCHS}"),
                            weights_only=False)
    state = checkpoint["state_dict"]
    assert int(state["gpa.epochs_done"]) == DEMO_EPOCHS
    assert torch.equal(state["prompt_learner.ctx"], state["gpa.sum_ctx"])  # the deployed prompts are the GPA ones
    assert not any(key.startswith("clip_model.") for key in state)
    assert re.search(r"^novel accuracy: \d+(\.\d)?%$", run["novel_log"], re.M), run["novel_log"][-2000:]
