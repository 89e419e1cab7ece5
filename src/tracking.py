"""Weights & Biases: online when a login exists, offline otherwise (never a login prompt), one run id per output dir."""

import logging
import netrc
import os
import secrets

RUN_ID_FILE = "wandb_run_id"
log = logging.getLogger(__name__)


class NoTracking:
    """Stands in for a W&B run when --no-wandb is given."""

    def log(self, metrics, step=None):
        pass

    def set_summary(self, metrics):
        pass

    def finish(self):
        pass


class WandbTracking:
    def __init__(self, run):
        self.run = run

    def log(self, metrics, step=None):
        self.run.log(metrics, step=step)

    def set_summary(self, metrics):
        self.run.summary.update(metrics)

    def finish(self):
        self.run.finish()


def has_wandb_login():
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def start_tracking(enabled, project, output_dir, config):
    if not enabled:
        log.info("W&B logging is off (--no-wandb)")
        return NoTracking()
    import wandb

    id_path = os.path.join(output_dir, RUN_ID_FILE)
    if os.path.exists(id_path):
        with open(id_path) as f:
            run_id = f.read().strip()
    else:
        run_id = secrets.token_hex(4)  # W&B run ids are short lowercase alphanumerics
        with open(id_path, "w") as f:
            f.write(run_id + "\n")
    mode = os.environ.get("WANDB_MODE") or ("online" if has_wandb_login() else "offline")
    run = wandb.init(project=project, id=run_id, resume="allow", dir=output_dir, config=config, mode=mode,
                     settings=wandb.Settings(silent=True, init_timeout=120))
    if mode == "offline":
        log.info(f"W&B is offline (no login found): run {run_id} is saved in {run.settings.sync_dir}; "
                 f"upload it later with `wandb sync {run.settings.sync_dir}`")
    else:
        log.info(f"W&B run {run_id}: {run.url}")
    return WandbTracking(run)
