"""The policy presets and the reference config that ship inside the package, and `init`'s writer.

The files are the repository's top-level `policies/*.toml` and `config.example.toml`;
`router/data/` links to them, so an editable install and a built wheel read the same text.
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from router.config import RouterConfig
from router.errors import ConfigError, RouterError

__all__ = ["EXAMPLE", "load_preset", "preset_names", "preset_text", "write_config"]

EXAMPLE = "example"
"""The name under which config.example.toml, the reference of every key, is offered."""

_DATA = resources.files("router") / "data"


def _preset_files() -> dict[str, Traversable]:
    policies = [f for f in (_DATA / "policies").iterdir() if f.name.endswith(".toml")]
    files = {f.name.removesuffix(".toml"): f for f in sorted(policies, key=lambda f: f.name)}
    return files | {EXAMPLE: _DATA / "config.example.toml"}


def preset_names() -> list[str]:
    """The shipped presets (`default`, `cost-saver`, ...), then `example`."""
    return list(_preset_files())


def preset_text(name: str) -> str:
    """The TOML text of a preset, comments included."""
    files = _preset_files()
    if name not in files:
        raise ConfigError(f'unknown preset "{name}"; expected one of {", ".join(files)}')
    return files[name].read_text(encoding="utf-8")


def load_preset(name: str) -> RouterConfig:
    """A preset as a config; its store path stays relative, like the built-in defaults'."""
    return RouterConfig.from_toml_text(preset_text(name), None)


def _header(name: str, path: Path) -> str:
    return (
        f"# hybrid-router config, written by `hybrid-router init --preset {name}`.\n"
        "#\n"
        "# Commands read ./router.toml, or the file given by --config FILE or $HYBRID_ROUTER_CONFIG.\n"
        f"# Check this one with `hybrid-router validate {path}`: it prints the effective policy.\n"
        "# Keys left out have their defaults; requests are stored in hybrid-router.db next to\n"
        "# this file ([store] path). Every key, its default and its meaning:\n"
        "#   hybrid-router init --preset example --path reference.toml\n"
        "#\n"
    )


def write_config(path: str | os.PathLike[str], preset: str = "default", *, force: bool = False) -> Path:
    """Write a commented config from `preset`; an existing file is kept unless `force`."""
    target = Path(path)
    text = preset_text(preset)
    if preset != EXAMPLE:
        text = _header(preset, target) + text
    try:
        with target.open("w" if force else "x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        raise RouterError(f"{target} already exists; pass --force to overwrite it") from None
    except IsADirectoryError:
        raise RouterError(f"{target} is a directory; give a file path with --path") from None
    except OSError as exc:
        raise RouterError(f"{target}: cannot write: {exc.strerror or exc}") from None
    return target
