"""docs/options.md, generated from the option declarations:
`python -m resnet_cifar.cli.options_page > docs/options.md` (tests fail when the page is stale)."""
from __future__ import annotations

from resnet_cifar.options import GROUPS, MODES, OPTIONS, Option
from resnet_cifar.recipes import RECIPES


def _accepts(option: Option) -> str:
    if option.choices is not None and len(option.choices) > 8:
        return "a name listed in what it does"
    if option.choices is not None:
        return ", ".join(f"`{c}`" for c in option.choices)
    if option.kind in ("switch", "no-switch"):
        return "switch"
    if option.kind == "boolean":
        return f"switch (`--no-{option.flag[2:]}`)"
    what = getattr(option.type, "what", "text")
    return what + {"+": ", one or more", "*": ", any number"}.get(option.nargs or "", "")


def _default_text(option: Option) -> str:
    value = option.default_value
    if option.kind == "no-switch":
        return f"not given: {option.dest.replace('_', ' ')} on"
    if value is None or value == []:
        return "—"
    if value is False:
        return "off"
    if value is True:
        return "on"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return f"`{value}`"


def options_markdown() -> str:
    """docs/options.md: a table per group, generated from OPTIONS (tests fail when the file is stale)."""
    lines = ["# Options", "",
             "Generated from `resnet_cifar/options/` by `python -m resnet_cifar.cli.options_page > docs/options.md`;",
             "a test fails when this page",
             "and the code disagree. A recipe (`--recipe`, docs/recipes.md) changes some defaults of training",
             "options; an option typed on the command line overrides the recipe's value.", "",
             "**Resume**: what `--resume` does with a training option typed again: *refused* when it differs from",
             "the checkpoint's (it would be another experiment), *allowed* (the typed value replaces the",
             "checkpoint's), *per invocation* (always this command line's value). **Experiment**: whether two",
             "runs that differ in it are different experiments for `--mode summary` (runs that differ only in",
             "options marked *no* are grouped, and their final accuracies averaged).", ""]
    for group in GROUPS:
        members = [o for o in OPTIONS if o.group == group]
        lines += [f"## {group.capitalize()}", ""]
        if GROUPS[group]:
            lines += [GROUPS[group][0].upper() + GROUPS[group][1:] + ".", ""]
        lines += ["| option | accepts | default | modes | resume | experiment | what it does |",
                  "|---|---|---|---|---|---|---|"]
        for o in members:
            resume = o.resume or "—"
            experiment = ("yes" if o.experiment else "no") if o.in_train_config else "—"
            modes = "all" if o.modes == MODES else ", ".join(o.modes)
            text = o.help.replace("|", "\\|")
            flag = "PATH ..." if o.kind == "positional" else f"`{o.flag}`"
            lines.append(f"| {flag} | {_accepts(o)} | {_default_text(o)} | {modes} | {resume} | {experiment} "
                         f"| {text} |")
        lines.append("")
    lines += ["## Recipes", "", "`--recipe NAME` sets these values; an option typed on the command line overrides its "
              "value ([recipes.md](recipes.md)).", ""]
    lines += [f"- `{name}`: {recipe.summary}" for name, recipe in RECIPES.items()]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(options_markdown(), end="")
