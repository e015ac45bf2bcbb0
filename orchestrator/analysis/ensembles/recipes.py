"""The blend methods by name: what each is (a Recipe), its name, what it does in words, and
the methods a blend spec plans. The one place a method's name is built, described or looked up."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orchestrator.analysis.ensembles import methods as ens
from tasks.spec.experiment import BlendSpec

Weighting = Literal["single", "equal", "greedy", "greedy_log_loss", "greedy_refined"]

WEIGHTINGS = {
    ("soft", "single"): "the one model with the best OOF score, alone",
    ("hard", "equal"): "majority vote of every model's predicted class, ties to the better model",
    ("hard", "greedy"): "vote of predicted classes, vote weights by greedy selection started from the best three",
    ("soft", "equal"): "plain average of every model's class probabilities",
    ("soft", "greedy"): "weighted average of class probabilities, weights by greedy forward selection "
                        "(Caruana) on the blend metric",
    ("soft", "greedy_log_loss"): "weighted average of class probabilities, weights by greedy selection on log loss",
    ("soft", "greedy_refined"): "soft_greedy's weights refined by a Nelder-Mead search on the blend metric",
}
# Equal weights fit nothing; picking one model or greedy weights fit a choice of models; the
# refined weights add a search on top of the greedy ones.
FITTED_PARTS = {"equal": 0, "single": 1, "greedy": 1, "greedy_log_loss": 1, "greedy_refined": 2}
# Per attribute (only with specialists in the blend): mask, gender and age band each blended from
# every model that predicts it, an all-class model by its marginal over that attribute.
PER_ATTRIBUTE = {
    "equal": "per attribute (mask, gender, age band): plain average of every model that predicts it (an "
             "all-class model's marginal probability, a specialist's own), the class composed from the three",
    "greedy": "per attribute (mask, gender, age band): weighted average of every model that predicts it (an "
              "all-class model's marginal, a specialist's own), weights by greedy selection (Caruana) on that "
              "attribute's blend metric; the class composed from the three",
}
# Greedy weights per attribute fit three weightings.
PER_ATTRIBUTE_PARTS = {"equal": 0, "greedy": 3}
FLAGS = {
    "temp": "each model's logits first divided by a temperature fitted to its log loss",
    "attr": "mask, gender and age band each decided on its own (per-attribute decoding)",
    "offsets": "per-class offsets added to the log-scores before deciding, fitted for the metric",
}


@dataclass(frozen=True)
class Recipe:
    vote: Literal["soft", "hard"]
    weighting: Weighting
    temperature: bool = False
    offsets: bool = False
    decode: ens.Decode = "joint"
    # weights per attribute over every model that predicts it, specialists too (then decode is
    # per_attribute); False: one weight per model over the 18 classes
    per_attribute_weights: bool = False

    @property
    def name(self) -> str:
        """e.g. single, hard_weighted, soft_greedy_refined_temp+attr+offsets, per_attr_greedy+offsets."""
        if self.per_attribute_weights:
            return f"per_attr_{self.weighting}" + ("+offsets" if self.offsets else "")
        if self.weighting == "single":
            return "single"
        if self.vote == "hard":
            return "hard_equal" if self.weighting == "equal" else "hard_weighted"
        return (f"soft_{self.weighting}" + ("_temp" if self.temperature else "")
                + ("+attr" if self.decode == "per_attribute" else "") + ("+offsets" if self.offsets else ""))

    @property
    def complexity(self) -> int:
        """How many parts are fitted on the OOF rows: the order of simplicity the blend's
        one-standard-error choice uses (per-attribute decoding is a fixed rule, fitted nothing)."""
        if self.per_attribute_weights:
            return PER_ATTRIBUTE_PARTS[self.weighting] + self.offsets
        return FITTED_PARTS[self.weighting] + self.temperature + self.offsets

    def describe(self) -> str:
        """What the method does, in one line."""
        if self.per_attribute_weights:
            return "; ".join([PER_ATTRIBUTE[self.weighting], *([FLAGS["offsets"]] if self.offsets else [])])
        flags = [f for f, on in (("temp", self.temperature), ("attr", self.decode == "per_attribute"),
                                 ("offsets", self.offsets)) if on]
        return "; ".join([WEIGHTINGS[(self.vote, self.weighting)], *(FLAGS[f] for f in flags)])


SINGLE = Recipe("soft", "single")
EQUAL = Recipe("soft", "equal")


def plan_recipes(spec: BlendSpec, specialists: bool = False) -> tuple[Recipe, ...]:
    """The methods to compare; offsets, decoding and hard votes only matter for decisions. With
    `specialists` in the blend, the per-attribute weightings too (the only methods that use them,
    planned whatever blend.decode says: they decide per attribute by construction)."""
    decision = spec.metric != "log_loss"
    recipes = [SINGLE]
    if decision:
        recipes += [Recipe("hard", "equal"), Recipe("hard", "greedy")]
    final = ("greedy_refined" if spec.refine else "greedy", spec.temperature)
    stacks = [("equal", False), ("greedy", False)]
    stacks += [("greedy_log_loss", False)] if decision else []
    stacks += [("greedy_refined", False)] if spec.refine else []
    stacks += [final] if spec.temperature else []
    decodes = {"joint": ["joint"], "per_attribute": ["per_attribute"], "both": ["joint", "per_attribute"]}
    for weighting, temperature in stacks:
        for decode in decodes[spec.decode] if decision else ["joint"]:
            tuned = decision and spec.class_offsets and (weighting, temperature) in (("equal", False), final)
            for offsets in (False, True) if tuned else (False,):
                recipes.append(Recipe("soft", weighting, temperature, offsets, decode))
    if specialists:
        for weighting in PER_ATTRIBUTE:
            for offsets in (False, True) if decision and spec.class_offsets else (False,):
                recipes.append(Recipe("soft", weighting, offsets=offsets, decode="per_attribute",
                                      per_attribute_weights=True))
    return tuple(recipes)


def recipe_named(name: str, spec: BlendSpec, specialists: bool = False) -> Recipe | None:
    """The method `spec` plans under `name`, if it plans one."""
    return {r.name: r for r in plan_recipes(spec, specialists)}.get(name)


# Between them, every method a blend spec can plan: for a name read back from a file.
_EVERY = tuple(BlendSpec(decode="both", refine=refine) for refine in (True, False))


def recipe_by_name(name: str) -> Recipe | None:
    """The method called `name` under any blend spec (a name read back from weights.json)."""
    return next((r for r in (recipe_named(name, s, True) for s in _EVERY) if r), None)


def describe_method(name: str) -> str:
    """What the method `name` does, in one line (for the report and the console)."""
    recipe = recipe_by_name(name)
    return recipe.describe() if recipe else "(a method this version does not plan)"
