"""Search spaces and subnet specs of OFA-MobileNetV3 (Cai et al., ICLR 2020, sections 3.1-3.2).

`SearchSpace` is the space as data (stage widths, strides, elastic choices, resolutions);
`ArchSpec` is one subnet of a space, the contract every part of ofa-sdk trades. Pure Python plus
numpy: the device side imports this module, so it must never import torch.

Layer accounting (`ArchSpec.layers`, `macs`, `params`) lives in `ofa_sdk.layers`; it follows the
official ``ofa`` package's OFAMobileNetV3 layout exactly.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # numpy is not imported at runtime: `import ofa_sdk` must stay fast
    import numpy as np

from ofa_sdk.errors import ArchSpecError
from ofa_sdk.layers import LayerInfo, make_divisible, subnet_layers

__all__ = [
    "SearchSpace",
    "ArchSpec",
    "LayerInfo",
    "make_divisible",
    "get_space",
    "register_space",
    "list_spaces",
    "IMAGENET_W10",
    "IMAGENET_W12",
    "FMNIST",
]

_ACTS = ("relu", "h_swish")


def _as_int_tuple(values: Any, name: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not (isinstance(values, Sequence) or hasattr(values, "__array__")):
        raise ArchSpecError(f"{name} must be a list of integers, got {values!r}", field=name)
    out = []
    for i, v in enumerate(values):
        out.append(_as_int(v, f"{name}[{i}]", field=name))
    return tuple(out)


def _as_int(value: Any, name: str, *, field: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise ArchSpecError(f"{name} must be an integer, got {value!r}", field=field or name)
    return int(value)


@dataclass(frozen=True)
class SearchSpace:
    """An OFA-MobileNetV3 search space.

    Widths are the base widths before ``width_mult``; the ``*_channels`` properties give the real
    channel counts. Each stage has ``max(depth_choices)`` block slots; an `ArchSpec` keeps the first
    ``depth`` blocks of each stage (section 3.2, elastic depth).
    """

    name: str
    stage_widths: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stage_acts: tuple[str, ...]
    stage_se: tuple[bool, ...]
    resolutions: tuple[int, ...]
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[int, ...] = (3, 4, 6)
    depth_choices: tuple[int, ...] = (2, 3, 4)
    in_channels: int = 3
    num_classes: int = 1000
    stem_width: int = 16
    stem_stride: int = 2
    first_block_width: int = 16
    first_block_stride: int = 1
    first_block_act: str = "relu"
    first_block_se: bool = False
    final_expand_width: int = 960
    feature_mix_width: int = 1280
    width_mult: float = 1.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("stage_widths", "stage_strides", "resolutions", "kernel_choices",
                     "expand_choices", "depth_choices"):
            object.__setattr__(self, name, _as_int_tuple(getattr(self, name), name))
        object.__setattr__(self, "stage_acts", tuple(self.stage_acts))
        object.__setattr__(self, "stage_se", tuple(bool(s) for s in self.stage_se))
        for name in ("kernel_choices", "expand_choices", "depth_choices", "resolutions"):
            values = getattr(self, name)
            if not values or any(v <= 0 for v in values):
                raise ArchSpecError(f"{name} must be a non-empty list of positive integers",
                                    field=name)
            object.__setattr__(self, name, tuple(sorted(set(values))))
        if any(k % 2 == 0 for k in self.kernel_choices):
            raise ArchSpecError("kernel_choices must be odd", field="kernel_choices")
        n = len(self.stage_widths)
        for name in ("stage_strides", "stage_acts", "stage_se"):
            if len(getattr(self, name)) != n:
                raise ArchSpecError(f"{name} has {len(getattr(self, name))} entries, "
                                    f"stage_widths has {n}", field=name)
        for i, act in enumerate((*self.stage_acts, self.first_block_act)):
            if act not in _ACTS:
                raise ArchSpecError(f"activation {act!r} is not one of {_ACTS}", field="stage_acts")
        if self.width_mult <= 0:
            raise ArchSpecError("width_mult must be positive", field="width_mult")

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stage_widths)

    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @property
    def num_slots(self) -> int:
        """Number of elastic block slots (stages x max depth)."""
        return self.num_stages * self.max_depth

    def _scaled(self, width: int) -> int:
        return make_divisible(width * self.width_mult, 8)

    @property
    def stem_channels(self) -> int:
        return self._scaled(self.stem_width)

    @property
    def first_block_channels(self) -> int:
        return self._scaled(self.first_block_width)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self._scaled(w) for w in self.stage_widths)

    @property
    def final_expand_channels(self) -> int:
        return self._scaled(self.final_expand_width)

    @property
    def feature_mix_channels(self) -> int:
        return self._scaled(self.feature_mix_width)

    def stage_of_slot(self, slot: int) -> int:
        return slot // self.max_depth

    # ---- specs ---------------------------------------------------------------------------------
    def spec(self, kernel_sizes: Sequence[int] | int, expand_ratios: Sequence[int] | int,
             depths: Sequence[int] | int, resolution: int | None = None) -> ArchSpec:
        """Build a spec; a scalar argument is broadcast to every slot/stage.

        >>> FMNIST.spec(7, 6, 4, 28).depths
        (4, 4, 4, 4)
        """
        if isinstance(kernel_sizes, int):
            kernel_sizes = [kernel_sizes] * self.num_slots
        if isinstance(expand_ratios, int):
            expand_ratios = [expand_ratios] * self.num_slots
        if isinstance(depths, int):
            depths = [depths] * self.num_stages
        if resolution is None:
            resolution = max(self.resolutions)
        return ArchSpec(kernel_sizes, expand_ratios, depths, resolution, space=self)

    def largest(self, resolution: int | None = None) -> ArchSpec:
        return self.spec(max(self.kernel_choices), max(self.expand_choices),
                         max(self.depth_choices), resolution or max(self.resolutions))

    def smallest(self, resolution: int | None = None) -> ArchSpec:
        return self.spec(min(self.kernel_choices), min(self.expand_choices),
                         min(self.depth_choices), resolution or min(self.resolutions))

    def sample(self, rng: np.random.Generator, *, kernel_choices: Sequence[int] | None = None,
               expand_choices: Sequence[int] | None = None,
               depth_choices: Sequence[int] | None = None,
               resolutions: Sequence[int] | None = None) -> ArchSpec:
        """Draw a uniformly random subnet, optionally from a subset of the choices.

        The progressive-shrinking phases restrict the choices (e.g. ``depth_choices=(3, 4)``).

        >>> import numpy as np
        >>> s = FMNIST.sample(np.random.default_rng(0))
        >>> s.space is FMNIST
        True
        """
        ks = tuple(kernel_choices or self.kernel_choices)
        es = tuple(expand_choices or self.expand_choices)
        ds = tuple(depth_choices or self.depth_choices)
        rs = tuple(resolutions or self.resolutions)
        return ArchSpec(
            tuple(int(v) for v in rng.choice(ks, size=self.num_slots)),
            tuple(int(v) for v in rng.choice(es, size=self.num_slots)),
            tuple(int(v) for v in rng.choice(ds, size=self.num_stages)),
            int(rng.choice(rs)),
            space=self,
        )

    def to_json(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchSpace:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ArchSpecError(f"unknown search space fields: {sorted(unknown)}",
                                field=sorted(unknown)[0])
        try:
            return cls(**dict(data))
        except TypeError as e:
            raise ArchSpecError(f"invalid search space: {e}") from None

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r})"


@dataclass(frozen=True)
class ArchSpec:
    """One subnet: a kernel size and expand ratio per block slot, a depth per stage, a resolution.

    Slots beyond a stage's depth are skipped but must still hold valid choices, so that every
    spec is also a valid supernet setting. Construction validates against ``space``; an invalid
    field raises `ArchSpecError` naming it.

    >>> spec = FMNIST.smallest()
    >>> ArchSpec.from_str(str(spec), space=FMNIST) == spec
    True
    """

    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]
    depths: tuple[int, ...]
    resolution: int
    space: SearchSpace = field(kw_only=True, repr=False)

    def __post_init__(self) -> None:
        sp = self.space
        if not isinstance(sp, SearchSpace):
            raise ArchSpecError(f"space must be a SearchSpace, got {type(sp).__name__}",
                                field="space")
        for name, n, choices, what in (
            ("kernel_sizes", sp.num_slots, sp.kernel_choices, "block slots"),
            ("expand_ratios", sp.num_slots, sp.expand_choices, "block slots"),
            ("depths", sp.num_stages, sp.depth_choices, "stages"),
        ):
            values = _as_int_tuple(getattr(self, name), name)
            if len(values) != n:
                raise ArchSpecError(
                    f"{name} has {len(values)} entries; space {sp.name!r} has {n} {what}",
                    field=name)
            for i, v in enumerate(values):
                if v not in choices:
                    raise ArchSpecError(
                        f"{name}[{i}]={v} is not one of the space's choices {list(choices)}",
                        field=name)
            object.__setattr__(self, name, values)
        res = _as_int(self.resolution, "resolution")
        if res not in sp.resolutions:
            raise ArchSpecError(
                f"resolution={res} is not one of the space's resolutions {list(sp.resolutions)}",
                field="resolution")
        object.__setattr__(self, "resolution", res)

    # ---- views ---------------------------------------------------------------------------------
    def active_slots(self) -> list[int]:
        """Indices of the block slots this subnet runs, in order."""
        md = self.space.max_depth
        return [s * md + i for s, d in enumerate(self.depths) for i in range(d)]

    def canonical(self) -> ArchSpec:
        """The same network with skipped slots set to the smallest choices (for dedup/hashing)."""
        active = set(self.active_slots())
        kmin, emin = min(self.space.kernel_choices), min(self.space.expand_choices)
        ks = tuple(k if i in active else kmin for i, k in enumerate(self.kernel_sizes))
        es = tuple(e if i in active else emin for i, e in enumerate(self.expand_ratios))
        return dataclasses.replace(self, kernel_sizes=ks, expand_ratios=es)

    def with_resolution(self, resolution: int) -> ArchSpec:
        return dataclasses.replace(self, resolution=resolution)

    def layers(self) -> list[LayerInfo]:
        """The subnet's layers in execution order, with their shapes (`ofa_sdk.layers`)."""
        return subnet_layers(self)

    def macs(self) -> int:
        """Multiply-accumulates of one forward pass at ``resolution`` (batch 1)."""
        return sum(layer.macs() for layer in self.layers())

    def params(self) -> int:
        """Parameters of the extracted subnet (conv, BN affine, SE and classifier biases)."""
        return sum(layer.params() for layer in self.layers())

    # ---- serialisation -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "space": self.space.name,
            "ks": list(self.kernel_sizes),
            "e": list(self.expand_ratios),
            "d": list(self.depths),
            "r": self.resolution,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str, *, space: SearchSpace | None = None
                  ) -> ArchSpec:
        """Inverse of `to_json`; also accepts a JSON string. ``space`` defaults to the named preset.

        The official package's ``{"ks", "e", "d"}`` dicts (no ``r``/``space``) are accepted when
        ``space`` is given; the resolution then defaults to the space's largest.
        """
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as e:
                raise ArchSpecError(f"arch spec is not valid JSON: {e}") from None
        if not isinstance(data, Mapping):
            raise ArchSpecError(f"arch spec must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("ks", "e", "d") if k not in data]
        if missing:
            raise ArchSpecError(f"arch spec is missing {missing}", field=missing[0])
        name = data.get("space")
        if space is None:
            if name is None:
                raise ArchSpecError("arch spec names no search space; pass space=", field="space")
            space = get_space(name)
        elif name is not None and name != space.name:
            raise ArchSpecError(f"arch spec is for space {name!r}, not {space.name!r}",
                                field="space")
        res = data.get("r", max(space.resolutions))
        return cls(data["ks"], data["e"], data["d"], res, space=space)

    def __str__(self) -> str:
        def enc(values: tuple[int, ...]) -> str:
            return "".join(map(str, values)) if all(v < 10 for v in values) else ".".join(
                map(str, values))
        return (f"k{enc(self.kernel_sizes)}-e{enc(self.expand_ratios)}-d{enc(self.depths)}"
                f"-r{self.resolution}")

    def __repr__(self) -> str:
        return f"ArchSpec({str(self)!r}, space={self.space.name!r})"

    @classmethod
    def from_str(cls, text: str, *, space: SearchSpace) -> ArchSpec:
        """Parse the short form ``k...-e...-d...-r..`` written by ``str(spec)``."""
        parts = text.strip().split("-")
        prefixes = ("k", "e", "d", "r")
        if len(parts) != 4 or any(not p.startswith(c) for p, c in zip(parts, prefixes)):
            raise ArchSpecError(f"cannot parse arch spec {text!r}; expected 'k..-e..-d..-r..'")

        def dec(body: str, name: str) -> list[int]:
            items = body.split(".") if "." in body else list(body)
            try:
                return [int(v) for v in items]
            except ValueError:
                raise ArchSpecError(f"cannot parse {name} in {text!r}", field=name) from None

        try:
            res = int(parts[3][1:])
        except ValueError:
            raise ArchSpecError(f"cannot parse resolution in {text!r}", field="resolution") from None
        return cls(dec(parts[0][1:], "kernel_sizes"), dec(parts[1][1:], "expand_ratios"),
                   dec(parts[2][1:], "depths"), res, space=space)


# ---- presets -----------------------------------------------------------------------------------

def _imagenet(width_mult: float) -> SearchSpace:
    return SearchSpace(
        name=f"ofa_mbv3_d234_e346_k357_w{width_mult}",
        stage_widths=(24, 40, 80, 112, 160),
        stage_strides=(2, 2, 2, 1, 2),
        stage_acts=("relu", "relu", "h_swish", "h_swish", "h_swish"),
        stage_se=(False, True, False, True, True),
        resolutions=tuple(range(128, 225, 4)),
        width_mult=width_mult,
    )


#: The official OFA-MobileNetV3 ImageNet space (ofa_mbv3_d234_e346_k357_w1.0).
IMAGENET_W10 = _imagenet(1.0)
#: The same space at width multiplier 1.2.
IMAGENET_W12 = _imagenet(1.2)

#: A small-image space for 28x28-32x32 grey images (Fashion-MNIST): stride-1 stem, three
#: downsamplings (28 -> 14 -> 7 -> 4), narrower stages so the full PS schedule fits a 2-core CPU.
FMNIST = SearchSpace(
    name="ofa_mbv3_fmnist_d234_e346_k357",
    stage_widths=(24, 40, 64, 96),
    stage_strides=(2, 2, 2, 1),
    stage_acts=("relu", "relu", "h_swish", "h_swish"),
    stage_se=(False, True, False, True),
    resolutions=(24, 26, 28, 30, 32),
    in_channels=1,
    num_classes=10,
    stem_width=16,
    stem_stride=1,
    first_block_width=16,
    final_expand_width=384,
    feature_mix_width=768,
)

_REGISTRY: dict[str, SearchSpace] = {s.name: s for s in (IMAGENET_W10, IMAGENET_W12, FMNIST)}


def register_space(space: SearchSpace) -> SearchSpace:
    """Make ``space`` resolvable by name (e.g. from an index entry's ``"space"`` field)."""
    existing = _REGISTRY.get(space.name)
    if existing is not None and existing != space:
        raise ArchSpecError(f"a different search space named {space.name!r} is registered",
                            field="name")
    _REGISTRY[space.name] = space
    return space


def get_space(name: str) -> SearchSpace:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ArchSpecError(f"unknown search space {name!r}; known: {sorted(_REGISTRY)}",
                            field="space") from None


def list_spaces() -> list[str]:
    return sorted(_REGISTRY)
