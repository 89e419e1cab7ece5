"""Weights & Biases: online when a login exists, offline otherwise (never a login prompt), one run id per output dir.

W&B resumes a run online, but not offline: each start of an offline run writes a folder of its own, and `wandb sync`
of several folders with one id keeps only one of them. So every metric logged is also appended to the output dir's
wandb_history.jsonl; a resumed offline run replays it (up to the step it resumes from) into its new folder and
removes the folders it replaces: one offline folder per run, holding the whole run.
"""

import glob
import json
import logging
import netrc
import os
import secrets
import shutil

RUN_ID_FILE = "wandb_run_id"
HISTORY_FILE = "wandb_history.jsonl"
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
    def __init__(self, run, history_path):
        self.run = run
        self.history = open(history_path, "a")  # one handle for the run: no file opened per logged interval

    def log(self, metrics, step=None):
        self.run.log(metrics, step=step)
        self.history.write(json.dumps({"step": step, "metrics": metrics}) + "\n")
        self.history.flush()  # a killed run keeps every line it logged

    def set_summary(self, metrics):
        self.run.summary.update(metrics)

    def log_image(self, name, path):
        import wandb
        self.run.log({name: wandb.Image(path)})

    def finish(self):
        self.run.finish()
        self.history.close()


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


def read_history(path, last_step):
    """The entries of wandb_history.jsonl up to `last_step` (those after it were logged by steps that a resume
    repeats); a line cut off by a kill ends the history."""
    entries = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    break
                if entry["step"] is not None and entry["step"] > last_step:
                    break
                entries.append(entry)
    return entries


def continue_history(run, history_path, resumed_step, offline):
    """Keeps wandb_history.jsonl to the steps before `resumed_step`; offline, replays them into the new run's folder
    and removes the older folders of the same run, which the new one now holds."""
    entries = read_history(history_path, resumed_step)
    with open(history_path, "w") as f:
        f.writelines(json.dumps(entry) + "\n" for entry in entries)
    if not offline:
        return
    for entry in entries:
        run.log(entry["metrics"], step=entry["step"])
    earlier = [folder for folder in glob.glob(os.path.join(os.path.dirname(run.settings.sync_dir),
                                                           f"offline-run-*-{run.id}"))
               if folder != run.settings.sync_dir]
    for folder in earlier:
        shutil.rmtree(folder)
    if entries:
        log.info(f"W&B cannot resume an offline run: replayed the {len(entries)} logged entries of steps up to "
                 f"{resumed_step} into this run's folder, which replaces {len(earlier)} earlier one(s)")


def start_tracking(enabled, project, output_dir, config, resumed_step=0):
    """The W&B run of `output_dir` (NoTracking if not `enabled`), continuing the run's history up to
    `resumed_step`."""
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
    history_path = os.path.join(output_dir, HISTORY_FILE)
    continue_history(run, history_path, resumed_step, offline=mode == "offline")
    if mode == "offline":
        log.info(f"W&B is offline ({reason}): run {run_id} is saved in {run.settings.sync_dir}; "
                 f"upload it later with `wandb sync {run.settings.sync_dir}`")
    elif mode == "online":
        log.info(f"W&B run {run_id}: {run.url}")
    return WandbTracking(run, history_path)
