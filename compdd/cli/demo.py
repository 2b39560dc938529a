"""``compdd demo``: the whole product on the generated sample ImageNet, in minutes on a CPU."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False),
              help="Folder for every artifact (replaced on each run).")
@click.option("--quick", is_flag=True,
              help="Smaller sizes: about 2 minutes on 2 CPU cores instead of about 5 (numbers too noisy to compare).")
@click.option("--device", default=None, help="torch device; default cuda if available, else cpu.")
def demo_cmd(out: str, quick: bool, device: str | None) -> None:
    """Walk through Comp-DD end to end on a generated sample ImageNet: no ImageNet, no network, no GPU.

    Generates the sample, scores class complexity and rebuilds easy/hard subsets, exports them in the Hub
    layout and loads one back, distils and evaluates random, DATM and EDF at IPC 1 on an easy and a hard
    subset (a short, non-standard protocol), and builds a leaderboard from the results.

    \b
    Examples:
      compdd demo --quick
      compdd demo --out /tmp/compdd-demo
    """
    from compdd.demo import run_demo
    from compdd.evaluation.run import default_device

    run_demo(out, quick=quick, device=device or default_device(), echo=click.echo)


COMMANDS = [demo_cmd]
