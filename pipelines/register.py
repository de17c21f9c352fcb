"""DVC stage `register`: each combination's best model into the MLflow Model Registry, champion or challenger.

    python -m pipelines.register

For every model × loss of the grid, the best candidate of ``reports/evaluation.json`` (the training
run's model or its sweep's best trial, ranked by ``register.metric``) is registered as
``stylecore-<model>-<loss>``; each GAN run the evaluation scored as ``stylecore-<model>-<domain>``
(``register.gan_name``; ranked by the metric's mean over its domains, on their held-out artworks). It takes the alias ``champion`` only if it beats the current champion
on that metric, measured under the same evaluation protocol (pairs, size, metric weights); otherwise
it becomes ``challenger``. Each version carries tags (git commit, data hashes, training params,
encoder weights, evaluation metrics) and a description of how it was trained. Registering the same
logged model again reuses its version, so a re-run changes nothing.

Load a registered model anywhere::

    stylecore.load("models:/stylecore-adain-balanced_gram@champion")
    stylecore stylize --model models:/stylecore-adain-balanced_gram@champion --content … --style …
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Mapping

from pipelines.evaluate import PRETRAINED
from pipelines.provenance import GIT_COMMIT, GIT_DIRTY
from pipelines.sources import CatalogueError, load_params
from pipelines.stage import run_stage
from stylecore.io import atomic_write_text

CHAMPION, CHALLENGER = "champion", "challenger"
#: the evaluation's source of a GAN translation run (pipelines.evaluate.find_translators)
GAN = "gan"


class RegisterStageError(RuntimeError):
    """No evaluation to rank by, or a candidate without a logged model; the message names the fix."""


def settings_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml's ``register`` section, checked (:class:`pipelines.settings.RegisterSettings`)."""
    from pipelines.settings import read
    from stylecore.config import to_dict

    return to_dict(read(params, "register"))


def protocol_digest(evaluation: Mapping[str, Any]) -> str:
    """Identifies how candidates were scored (pairs, size, every metric backbone): only equal protocols compare."""
    protocol = {"pairs": evaluation["pairs"], "encoder": evaluation["encoder"], "backbones": evaluation.get("backbones"),
                "size": evaluation["settings"]["size"], "percentiles": evaluation["settings"]["spread_percentiles"]}
    return hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:12]


def better(value: float, than: float, mode: str) -> bool:
    return value < than if mode == "min" else value > than


def best_candidates(evaluation: Mapping[str, Any], metric: str, mode: str) -> dict[tuple[str, str], dict]:
    """The best candidate of each (model, loss) by ``metric`` (train before sweep on a tie)."""
    best: dict[tuple[str, str], dict] = {}
    for candidate in evaluation["candidates"]:
        key = (candidate["model"], candidate["loss"])
        if key not in best or better(candidate["metrics"][metric], best[key]["metrics"][metric], mode):
            best[key] = candidate
    return best


def gan_candidates(evaluation: Mapping[str, Any]) -> list[dict]:
    """Every scored GAN run of the evaluation (its ``translation`` section), with its domains and metrics (the mean
    over its domains) as a candidate record."""
    translation = evaluation.get("translation") or {}
    return [{**candidate, "domains": list(candidate["domains"])} for candidate in translation.get("candidates", [])]


def register_candidate(client, name: str, candidate: Mapping[str, Any], settings: Mapping[str, Any],
                       protocol: str) -> dict[str, Any]:
    """Register (or find) the candidate's version, tag it, and give it champion or challenger."""
    from mlflow.exceptions import MlflowException

    metric, mode = settings["metric"], settings["mode"]
    run_id = candidate.get("mlflow", {}).get("run_id")
    if not run_id:
        raise RegisterStageError(f"{candidate['name']}: its checkpoint {candidate['checkpoint']} has no MLflow run "
                                 "(mlflow.json); train it with the train stage so that its model is logged")
    run = client.get_run(run_id)
    model_uri = run.data.tags.get("model_uri")
    if not model_uri:
        raise RegisterStageError(f"{candidate['name']}: MLflow run {run_id} has no logged model (tag model_uri); "
                                 "re-run its train stage to completion")
    try:
        client.get_registered_model(name)
    except MlflowException:
        origin = (f"with published weights ({run.data.tags.get('weights.package', '?')}; licence "
                  f"{run.data.tags.get('weights.licence', '?')})" if candidate["loss"] == PRETRAINED
                  else f"translating photos to {', '.join(candidate['domains'])} (a GAN: pass the domain where "
                       "others take a style image)" if candidate["source"] == GAN
                  else f"trained with the {candidate['loss']} style loss")
        client.create_registered_model(name, description=f"stylecore {candidate['model']} {origin}; aliases: "
                                       f"{CHAMPION} (best so far by {metric}, {mode}) and {CHALLENGER} (the latest "
                                       "that did not beat it).")
    existing = [v for v in client.search_model_versions(f"name='{name}'")
                if run_id in (v.run_id, (v.tags or {}).get("stylecore.run_id"))]
    if existing:
        version = existing[0]  # a re-run: the same version again (its outcome is said below)
    else:
        # The client's own call, not mlflow.register_model: that one prints "already exists" for every version
        # after the first. A logged model's URI (models:/m-…) carries its id, which links the version to it.
        # Our own run tag: a version registered from a models:/m-… URI need not report its run on every store.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        version = client.create_model_version(name, model_uri, run_id=run_id, tags={"stylecore.run_id": run_id},
                                              model_id=model_id)
    tags = run.data.tags
    version_tags = {
        "source": candidate["source"], "candidate": candidate["name"], "run_id": run_id,
        # MLflow's source tags (runs logged before they were used carry git_commit / git_dirty)
        "git_commit": tags.get(GIT_COMMIT, tags.get("git_commit", "unknown")),
        "git_dirty": tags.get(GIT_DIRTY, tags.get("git_dirty", "unknown")),
        "eval.protocol": protocol, "eval.metric": metric,
        # every domain a GAN translates to (the photos' too), read by stylize-dataset to check --domain before any
        # actor starts
        **({"domains": ",".join(candidate.get("translates_to") or candidate["domains"])}
           if candidate["source"] == GAN else {}),
        **{f"eval.{k}": f"{v:.6g}" for k, v in candidate["metrics"].items()},
        **{k: v for k, v in tags.items() if k.startswith(("data.", "weights.")) or k.endswith("_weights")},
        "params": json.dumps(run.data.params, sort_keys=True)[:5000],
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    steps = run.data.params.get("train.steps", "?")
    origin = (f"{candidate['model']} with published weights, from the pretrained stage ({tags.get('weights.package', '?')}, "
              f"licence {tags.get('weights.licence', '?')}, files sha256-checked {tags.get('weights.hash_checked', '?')})"
              if candidate["loss"] == PRETRAINED else
              f"{candidate['model']} photo → {', '.join(candidate['domains'])}, from the gan stage "
              f"({tags.get('dvc_stage', 'unknown stage')}; profile {tags.get('profile', '?')}, {steps} steps on "
              f"{tags.get('workers', '?')} workers; scored on each domain's held-out artworks)"
              if candidate["source"] == GAN else
              f"{candidate['model']} × {candidate['loss']}, from the {candidate['source']} stage "
              f"({tags.get('dvc_stage', 'unknown stage')}; profile {tags.get('profile', '?')}, {steps} steps on "
              f"{tags.get('workers', '?')} workers, weights {tags.get('encoder_weights', '?')})")
    client.update_model_version(name, version.version, description=(
        f"{origin}, commit "
        f"{version_tags['git_commit'][:12]}. Evaluation: {metric} = {candidate['metrics'][metric]:.6g} "
        f"({mode} is better) on protocol {protocol}."))

    value = candidate["metrics"][metric]
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is not None and champion.version == version.version:
        alias, reason = CHAMPION, "already the champion"
    elif champion is None:
        alias, reason = CHAMPION, "the first version"
    elif champion.tags.get("eval.protocol") != protocol or champion.tags.get("eval.metric") != metric:
        alias, reason = CHALLENGER, (f"the champion (version {champion.version}) was scored under another evaluation "
                                     "protocol or metric, so the two cannot be compared; promote by hand if wanted")
    # compared as the tags keep them (6 digits): a re-trained model that scores the same is no better
    elif better(float(f"{value:.6g}"), float(champion.tags[f"eval.{metric}"]), mode):
        alias, reason = CHAMPION, f"beats version {champion.version} ({metric} {champion.tags[f'eval.{metric}']})"
    else:
        alias, reason = CHALLENGER, f"does not beat version {champion.version} ({metric} {champion.tags[f'eval.{metric}']})"
    client.set_registered_model_alias(name, alias, version.version)
    if alias == CHAMPION:
        try:  # the challenger alias must not point at the champion
            if client.get_model_version_by_alias(name, CHALLENGER).version == version.version:
                client.delete_registered_model_alias(name, CHALLENGER)
        except MlflowException:
            pass
    if reason not in QUIET_REASONS:  # a comparison worth a line of its own; the rest are summed up at the end
        print(f"register: {name} version {version.version} ({candidate['name']}, {metric} {value:.6g}) → {alias}: "
              f"{reason}", flush=True)
    return {"version": int(version.version), "alias": alias, "reason": reason, "candidate": candidate["name"],
            "source": candidate["source"], metric: value, "run_id": run_id, "uri": f"models:/{name}@{alias}",
            **({"domains": list(candidate["domains"])} if candidate["source"] == GAN else {})}


#: outcomes the stage's closing line sums up (a first registration, a re-run that changed nothing); a comparison
#: with an earlier champion gets a line of its own
QUIET_REASONS = ("the first version", "already the champion")


def run(*, params_path: Path = Path("params.yaml"), reports: Path = Path("reports")) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import fluent_store, tracking_settings

    params = load_params(params_path)
    settings = settings_of(params)
    source = reports / "evaluation.json"
    if not source.is_file():
        raise RegisterStageError(f"{source} not found; run `dvc repro evaluate` first (candidates are ranked by it)")
    evaluation = json.loads(source.read_text())
    tracking = tracking_settings(params, params_path.resolve().parent)
    client = MlflowClient(tracking.uri, registry_uri=tracking.uri)
    protocol = protocol_digest(evaluation)
    registry = {}
    # MLflow resolves a version's models:/m-… source through the process-wide store, not the client's: set it
    with fluent_store(tracking.uri):
        for (model, loss), candidate in sorted(best_candidates(evaluation, settings["metric"], settings["mode"]).items()):
            template = settings["pretrained_name"] if loss == PRETRAINED else settings["name"]
            name = template.format(model=model, loss=loss)
            registry[name] = register_candidate(client, name, candidate, settings, protocol)
        for candidate in gan_candidates(evaluation):
            name = settings["gan_name"].format(model=candidate["model"],
                                               domain=candidate["name"].removeprefix(f"{candidate['model']}-"))
            if settings["metric"] not in candidate["metrics"]:  # style_spread over a domain of one held-out artwork
                print(f"register: {name} not registered: {candidate['name']} has no {settings['metric']} (its domains "
                      "hold one held-out artwork each; a spread needs two)", flush=True)
                continue
            registry[name] = register_candidate(client, name, candidate, settings, protocol)
    atomic_write_text(reports / "registry.json", json.dumps(registry, indent=2) + "\n")
    quiet = {reason: [name.removeprefix("stylecore-") for name, record in registry.items() if record["reason"] == reason]
             for reason in QUIET_REASONS}
    said = "".join(f"; {len(names)} champion(s) as {reason}: {', '.join(names)}" for reason, names in quiet.items()
                   if names)
    print(f"register: {len(registry)} registered models at {tracking.uri}{said}; reports/registry.json", flush=True)
    return registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--reports", default="reports")
    args = parser.parse_args(argv)
    return run_stage("register", lambda: run(params_path=Path(args.params), reports=Path(args.reports)),
                     (CatalogueError, RegisterStageError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))
