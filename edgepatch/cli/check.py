"""``edgepatch check``: the sites, parameters, preprocessing and refusals of a Keras model (imports TensorFlow when run).

The one exception to the CLI contract: a model convert would refuse still prints its whole
report on stdout (text, or JSON with ``--json``), then one ``error:`` line on stderr and exit 2.
Bad invocations (missing or unreadable file, bad option) are plain one-line errors with empty stdout.
"""

from __future__ import annotations

import click

from edgepatch.cli.options import emit, expected_errors

SITES_SHOWN = 12


def _site_line(site: dict) -> str:
    kinds = ", ".join(f"{kind} ({'/'.join(roles)}, {site['parameters'][kind]:,})"
                      for kind, roles in site["kinds"].items()) or "-"
    return f"  {site['name']:<28} {site['op']:<9} {site['bn'] or '-':<28} {kinds}"


def _preprocessing_line(pre: dict) -> str:
    if "error" in pre:
        return f"preprocessing: {pre['error']}"
    numbers = lambda values: ", ".join(f"{v:.6g}" for v in values)  # noqa: E731
    return (f"preprocessing: {pre['mode']} (input = pixel * [{numbers(pre['scale'])}] + [{numbers(pre['offset'])}], "
            f"{pre['channels'].upper()})")


def render_check(result: dict) -> str:
    lines = [f"model: {result['model']}"] + [f"note: {note}" for note in result["notes"]]
    sites = result["sites"]
    if sites is None:
        lines.append("sites: cannot be listed until the refusals below are fixed")
    else:
        lines.append(f"sites: {len(sites)}" + (f" (first {SITES_SHOWN} shown)" if len(sites) > SITES_SHOWN else ""))
        lines.append(f"  {'name':<28} {'op':<9} {'folded BN':<28} kinds (delta roles, parameters)")
        lines += [_site_line(site) for site in sites[:SITES_SHOWN]]
    counts = result["parameters"]
    shown = lambda n: "?" if n is None else f"{n:,}"  # noqa: E731
    lines.append("parameters: " + ", ".join(f"{kind} {shown(n)}" for kind, n in counts["kinds"].items())
                 + f"; total {shown(counts['total'])}")
    lines.append(_preprocessing_line(result["preprocessing"]))
    refused = result["refused"]
    lines.append("convert would accept this model" if not refused else f"refused by convert: {len(refused)}")
    for item in refused:
        lines += [f"  `{item['layer']}` ({item['type']}): {item['problem']}", f"    remedy: {item['remedy']}"]
    return "\n".join(lines)


@click.command()
@click.argument("model_path", metavar="MODEL.keras")
@click.option("--patch", "patch_spec", default="scale_bias,logits", show_default=True,
              help="Kinds a task would train (as train --patch): each site lists the ones that patch it.")
@click.option("--preprocessing", type=click.Choice(["auto", "tf", "torch", "caffe", "raw"]), default="auto",
              show_default=True, help="As train --preprocessing: the report shows what a task would record.")
@click.option("--base", "family", default=None, help="Backbone family of the model, as train --base "
              "(for --preprocessing auto).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@expected_errors
def check(model_path, patch_spec, preprocessing, family, as_json):
    """Check a Keras model before training: sites, parameters, preprocessing, refused layers.

    Lists every layer convert would refuse, each with a remedy. Exit 0 when convert would
    accept the model; otherwise the report is still printed, then one error line, exit 2.

    \b
    Example:
      edgepatch check my_model.keras --patch scale_bias,logits --preprocessing torch
    """
    from edgepatch.apps.check import check_file
    from edgepatch.errors import ModelStructureError

    report = check_file(model_path, patch_spec, preprocessing, family)
    emit(report, as_json, render_check)
    refused = report["refused"]
    if refused:
        first = refused[0]
        count = f"{len(refused)} layer{'s' if len(refused) > 1 else ''}"
        raise ModelStructureError(f"{count} would be refused by convert (first: {first['problem']}; "
                                  f"remedy: {first['remedy']})")
