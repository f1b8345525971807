"""CLI: `cnlab image build NAME` (a wheelhouse artifact of a node image)."""

from __future__ import annotations

from pathlib import Path

import typer

from .console import JsonOpt, err, out, print_json


def register(app: typer.Typer) -> None:
    image_app = typer.Typer(
        help="Node images: build artifacts for devices.", no_args_is_help=True, rich_markup_mode=None
    )
    app.add_typer(image_app, name="image")

    @image_app.command("build")
    def build_cmd(
        name: str = typer.Argument(..., help="The image: a directory node_images/NAME with image.yaml."),
        out_dir: Path | None = typer.Option(
            None, "--out", help="Where the artifact goes (default: build/images in the checkout)."
        ),
        local_version: str | None = typer.Option(
            None, "--local-version", help="Build VERSION+LABEL from the same source (e.g. to rehearse an upgrade)."
        ),
        force: bool = typer.Option(False, "--force", help="Rebuild even if the artifact is current."),
        json_: bool = JsonOpt,
    ) -> None:
        """Build NAME's wheelhouse artifact (the node and every dependency as wheels), so devices
        install it without registry access; skipped when the artifact is current."""
        from ..images.wheelhouse import DEFAULT_OUT, build

        err.print(f"building {name} (pip wheel) ...")
        art = build(name, out_dir=out_dir or DEFAULT_OUT, local_version=local_version, force=force)
        if json_:
            print_json(
                {
                    "name": art.name,
                    "version": art.version,
                    "path": art.path,
                    "sha256": art.sha256,
                    "wheels": list(art.wheels),
                }
            )
            return
        out.print(f"{art.name} {art.version}: {art.path} ({len(art.wheels)} wheels, sha256 {art.sha256[:16]})")
