"""Compare guides on a bundled model through the Python API (what ``flowguide compare`` does).

    python examples/compare_elbos.py --model eight_schools --num-steps 2000
    python examples/compare_elbos.py --model funnel --guides AutoNormal AutoIAF --smoke

Trains each guide with the same optimizer, steps and seed, scores it from its own draws
(ELBO, importance-weighted bound, Pareto k-hat, ESS), prints a table, and exports the
best guide's draws to ArviZ for a summary.
"""

from __future__ import annotations

import argparse

import arviz as az
import pyro
import torch

from flowguide.apps.bundled import BUNDLED_MODELS, bundled_model
from flowguide.apps.compare import GUIDES, compare_guides, markdown_table, train_guide
from flowguide.diagnostics import psis_diagnostic, to_inference_data
from flowguide.training import to_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(BUNDLED_MODELS), default="eight_schools")
    parser.add_argument("--guides", nargs="+", choices=list(GUIDES), default=["AutoNormal", "AutoIAF"])
    parser.add_argument("--num-steps", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a few steps, to check the script runs")
    args = parser.parse_args(argv)

    case = bundled_model(args.model)
    data = to_device(case.args, torch.device(args.device))
    steps, draws = (5, 200) if args.smoke else (args.num_steps, 4000)
    with torch.device(args.device):
        rows, _ = compare_guides(
            case.model, data, args.guides, steps=steps, seed=args.seed, num_samples=draws, log_z=case.log_z
        )
        print(f"{args.model}: {case.description}\n{markdown_table(rows)}\n")

        best = max(rows, key=lambda r: r.elbo).guide  # refit the best one to export it
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        guide = GUIDES[best](case.model)
        train_guide(case.model, guide, data, steps, lr=1e-2, num_particles=8)
        idata = to_inference_data(case.model, guide, *data, num_samples=draws)
    psis = psis_diagnostic(torch.as_tensor(idata.sample_stats["log_importance_weight"].values).reshape(-1))
    print(f"{best}: k-hat {psis.khat:.2f} ({psis.verdict}), ESS {psis.ess:.0f} of {draws}")
    print(az.summary(idata, kind="stats").head(10))


if __name__ == "__main__":
    main()
