"""``server-ext stock``: attaching to the XMPP server people already run."""

from __future__ import annotations

import json

import click

from server_ext.cli.settings import Settings, json_option, pass_settings


@click.group()
def stock() -> None:
    """The stock XMPP server devices log in to ([stock] in server.toml)."""


@stock.command()
@json_option
@pass_settings
def snippet(settings: Settings, as_json: bool) -> None:
    """Print what to paste into the stock server's configuration.

    For ejabberd: c2s_cafile and tls_verify, the component listener with its secret, and
    mod_http_api on loopback with only the commands server-ext calls. For Prosody: this
    project's module (plugin_paths, modules_enabled, its settings), client certificates
    (c2s_ssl verify) and the component. The output holds the shared secret (made in the
    data directory, 0600, if missing); paste it where only the server's user can read it.
    Before the first `serve`, ejabberd's trust file is written too, so ejabberd can start.
    """
    from server_ext.net.data_directory import stock_secret
    from server_ext.stock.base import context_for
    from server_ext.stock.snippets import prepare
    from server_ext.stock.snippets import snippet as render

    config = settings.config
    secret = stock_secret(config.stock_secret_path)
    with settings.registry() as registry:
        context = context_for(config, registry, secret)
        made = prepare(context)
        result = render(context)
    if as_json:
        click.echo(json.dumps({**result.to_json(), "written": made}, indent=2))
        return
    click.echo(result.text, nl=False)
    for path in made:
        click.echo(f"(wrote {path}: the devices ejabberd trusts, empty for now)", err=True)
