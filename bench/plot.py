"""Draw a benchmark run's JSON into one PNG image: ``plot.py RESULTS IMAGE``.

It runs in its own virtualenv with matplotlib (``bench/.peers/plot``,
which ``bench/run.py --plot`` installs), so it imports nothing from the
project. Four panels: Encrypt throughput against concurrency for every
system; throughput of each operation at c=1 and at c=16, by system; and
each target's value as a share of its bound.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

SYSTEMS = (("echo", "echo floor"), ("kms-agent", "kms-agent"),
           ("openbao", "OpenBao"), ("moto", "moto"), ("pykmip", "PyKMIP"))
# Peer operations whose name differs from the agent operation they match.
PEER_OPERATION = {"get_secret_hit": "get_secret"}
OPERATIONS = (("encrypt", "Encrypt"), ("decrypt", "Decrypt"),
              ("generate_data_key", "GenerateDataKey"),
              ("sign_rsa2048", "Sign RSA"), ("sign_ecp256", "Sign P-256"),
              ("get_secret_hit", "Secret hit"), ("get_secret_miss", "Secret miss"))


def _ops(results: dict, system: str, operation: str, clients: int) -> float | None:
    if system == "kms-agent":
        name = f"{operation}_c{clients}"
    elif system == "echo":
        name = f"echo_c{clients}" if operation == "encrypt" else ""
    else:
        name = f"{system}_{PEER_OPERATION.get(operation, operation)}_c{clients}"
    return results["figures"].get(name, {}).get("ops_per_s")


def _encrypt_panel(axes, results: dict) -> None:
    concurrency = results["settings"]["concurrency"]
    for system, label in SYSTEMS:
        points = [(clients, _ops(results, system, "encrypt", clients))
                  for clients in concurrency]
        points = [(clients, value) for clients, value in points if value]
        if points:
            axes.plot(*zip(*points), marker="o", label=label)
    axes.set(xscale="log", yscale="log", xlabel="concurrent clients",
             ylabel="operations per second", title="Encrypt of 32 bytes")
    axes.set_xticks(concurrency, [str(clients) for clients in concurrency])
    axes.legend(fontsize="small")


def _operations_panel(axes, results: dict, clients: int) -> None:
    width = 0.8 / (len(SYSTEMS) - 1)
    for index, (system, label) in enumerate(SYSTEMS[1:]):
        values = [_ops(results, system, operation, clients) or 0
                  for operation, _ in OPERATIONS]
        positions = [number + index * width for number in range(len(OPERATIONS))]
        axes.bar(positions, values, width, label=label)
    axes.set_yscale("log")
    axes.set_xticks([number + 0.4 - width / 2 for number in range(len(OPERATIONS))],
                    [name for _, name in OPERATIONS], rotation=30, ha="right",
                    fontsize="small")
    axes.set(ylabel="operations per second", title=f"Each operation at c={clients}")
    axes.legend(fontsize="small")


def _targets_panel(axes, results: dict) -> None:
    rows = [ratio for ratio in results["ratios"].values() if ratio["value"] is not None]
    shares, colours = [], []
    for ratio in rows:
        # Above 1 means the target is met, for both kinds of bound.
        if ratio["comparison"] == ">=":
            shares.append(ratio["value"] / ratio["target"])
        else:
            shares.append(ratio["target"] / ratio["value"])
        colours.append("tab:green" if ratio["met"] else "tab:red")
    positions = range(len(rows))
    axes.barh(positions, shares, color=colours)
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_yticks(positions, [ratio["description"] for ratio in rows],
                    fontsize="x-small")
    axes.invert_yaxis()
    axes.set(xscale="log", xlabel="share of the target (1 = just met)",
             title="Targets")
    # Labels on the minor ticks of a log axis overlap, so only decades get one.
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())


def main(argv: list[str]) -> int:
    """Read the JSON at argv[1] and write the image to argv[2]."""
    with open(argv[1], encoding="utf-8") as file:
        results = json.load(file)
    figure, axes = plt.subplots(2, 2, figsize=(16, 11))
    _encrypt_panel(axes[0][0], results)
    _targets_panel(axes[0][1], results)
    _operations_panel(axes[1][0], results, 1)
    _operations_panel(axes[1][1], results, 16)
    figure.suptitle(f"kms-agent benchmark, {results['date']}, agent at "
                    f"{results['commit']}", fontsize="medium")
    figure.tight_layout()
    figure.savefig(argv[2], dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
