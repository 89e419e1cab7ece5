"""Weights & Biases: online when a login exists, offline otherwise (never a login prompt), one run id per output dir."""

import logging
import netrc
import os
import secrets

RUN_ID_FILE = "wandb_run_id"
ONLINE_INIT_TIMEOUT_SECONDS = 20  # then fall back to offline: a training run never waits long on W&B
log = logging.getLogger(__name__)


class NoTracking:
    """Stands in for a W&B run when --no-wandb is given."""

    def log(self, metrics, step=None):
        pass

    def set_summary(self, metrics):
        pass

    def log_image(self, name, path):
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

    def log_image(self, name, path):
        import wandb
        self.run.log({name: wandb.Image(path)})

    def finish(self):
        self.run.finish()


def has_wandb_login():
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def run_id_of(output_dir):
    """The W&B run id of this output dir, created on its first run, so a resumed run continues the same W&B run."""
    id_path = os.path.join(output_dir, RUN_ID_FILE)
    if not os.path.exists(id_path):
        with open(id_path, "w") as f:
            f.write(secrets.token_hex(4) + "\n")  # W&B run ids are short lowercase alphanumerics
    with open(id_path) as f:
        return f.read().strip()


def start_tracking(enabled, project, output_dir, config):
    if not enabled:
        log.info("W&B logging is off (--no-wandb)")
        return NoTracking()
    import wandb

    run_id = run_id_of(output_dir)

    def init(mode):
        return wandb.init(project=project, id=run_id, resume="allow", dir=output_dir, config=config, mode=mode,
                          settings=wandb.Settings(silent=True, init_timeout=ONLINE_INIT_TIMEOUT_SECONDS))

    if os.environ.get("WANDB_MODE"):
        mode, reason = os.environ["WANDB_MODE"], "WANDB_MODE is set"
    else:
        mode, reason = ("online", "") if has_wandb_login() else ("offline", "no login found")
    try:
        run = init(mode)
    except Exception as error:  # wandb raises its own CommError, UsageError, timeouts... for an unreachable server
        if mode == "offline":
            raise
        log.warning(f"W&B could not start online ({type(error).__name__}: {str(error).splitlines()[0]}); "
                    f"logging offline instead")
        wandb.teardown()  # the failed attempt still holds the run id in W&B's service process
        mode, reason = "offline", "server unreachable"
        run = init(mode)
    if mode == "offline":
        log.info(f"W&B is offline ({reason}): run {run_id} is saved in {run.settings.sync_dir}; "
                 f"upload it later with `wandb sync {run.settings.sync_dir}`")
    elif mode == "online":
        log.info(f"W&B run {run_id}: {run.url}")
    return WandbTracking(run)
