"""The ``go2aliyun`` command (click). Thin: parse options, call the module that does
the work, and turn errors into exit codes in :func:`main` only."""

import functools
import json
import os
import sys

import click

from source_script import __version__, allinone, excludes, preflight, tlsbridge
from source_script import check as chk
from source_script import inventory as inv
from source_script import migrate as mig
from source_script import overrides as ov
from source_script import session as sess
from wire import clientdata
from wire import config as cfg
from wire.climain import run_click
from wire.errors import ConfigError, Go2AliyunError
from wire.logs import REDACTED, redact, register_secret

WORKDIR_HELP = ("work folder holding user_config.json, client_data, Excludes/ and logs/ "
                "(default: the current folder)")
ROOT_HELP = "migrate the system mounted at DIR instead of / (an offline disk, a test host)"


def config_options(func):
    """Click decorator: add one option per config key (both spellings) and the seed's
    old flags. The command receives ``overrides`` (a dict of the config keys given on
    the command line, raw strings) and ``legacy`` (``{"no_enter_key": bool,
    "progress_file": str or None, "clear_data": bool}``) instead of the single options."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        overrides = {}
        for key, _names, _metavar, _help in ov.FLAGS:
            value = kwargs.pop("cfg_" + key, None)
            if value is not None:
                overrides[key] = value
        if overrides.get("secret_key"):
            register_secret(overrides["secret_key"])
            click.echo("warning: --secret-key on the command line is visible to other users "
                       "in the process list; prefer user_config.json (mode 0600) or %s"
                       % ov.ENV_SECRET, err=True)
        kwargs["overrides"] = overrides
        kwargs["legacy"] = {
            "no_enter_key": kwargs.pop("legacy_noenterkey", False),
            "progress_file": kwargs.pop("legacy_progressfile", None),
            "clear_data": kwargs.pop("legacy_cleardata", False),
        }
        return func(*args, **kwargs)

    opts = [click.option(*names, "cfg_" + key, metavar=metavar, default=None, help=help_)
            for key, names, metavar, help_ in ov.FLAGS]
    opts += [
        click.option("--noenterkey", "legacy_noenterkey", is_flag=True,
                     help="never wait for Enter or a confirmation (the seed's flag)"),
        click.option("--progressfile", "legacy_progressfile", metavar="FILE", default=None,
                     help="also write the stage and percent to FILE (the seed's format)"),
        click.option("--cleardata", "legacy_cleardata", is_flag=True,
                     help="reset client_data before starting (as `go2aliyun clear`)"),
    ]
    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="go2aliyun")
@click.option("-v", "--verbose", is_flag=True, help="show debug messages on the terminal")
@click.pass_context
def cli(ctx, verbose):
    """Move this Linux server into a bootable Alibaba Cloud ECS custom image.

    Typical use: start a receiver (intermediate instance), then run
    `GO2ALIYUN_TOKEN=T go2aliyun migrate --receiver ADDR` as root (the receiver proves it
    knows the token before it is sent; --fingerprint FP pins its certificate too).
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


@cli.command()
@click.option("--root", "root", default="/", metavar="DIR", help=ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def inventory(root, as_json):
    """Print the manifest the receiver will get: OS, kernels, disks, filesystems..."""
    manifest = inv.collect(root)
    if as_json:
        click.echo(json.dumps(manifest, indent=2, sort_keys=True))
    else:
        click.echo(inv.render_text(manifest))


@cli.command()
@click.option("--config", "config_path", metavar="FILE", default=None,
              help="user_config.json to use (default: WORKDIR/user_config.json)")
@click.option("--workdir", default=".", metavar="DIR", help=WORKDIR_HELP)
@click.option("--root", "root", default="/", metavar="DIR", help=ROOT_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="print the findings, the rsync filters per disk and the plan as JSON")
@config_options
def check(config_path, workdir, root, as_json, overrides, legacy):
    """Preflight: is this server ready to migrate? Exit 0 when nothing blocks,
    3 for a configuration error, 4 when something blocks."""
    try:
        report = preflight.run(config_path=config_path, workdir=workdir, root=root,
                               overrides=overrides).report()
    except ConfigError as e:
        if as_json:
            click.echo(redact(json.dumps({"ok": False, "error": e.to_dict()}, indent=2)))
        raise
    if as_json:
        click.echo(redact(json.dumps(report, indent=2, ensure_ascii=False)))
    else:
        click.echo(chk.render_table(report))
    if not report["ok"]:
        raise chk.failure(report)


@cli.command()
@click.option("--workdir", default=".", metavar="DIR", help=WORKDIR_HELP)
def init(workdir):
    """Create the work folder: user_config.json (the seed's template, mode 0600),
    Excludes/rsync_excludes_linux.txt and logs/. Existing files are kept."""
    os.makedirs(os.path.join(workdir, "logs"), mode=0o700, exist_ok=True)
    path = os.path.join(workdir, cfg.CONFIG_NAME)
    click.echo("%s %s" % ("wrote" if cfg.write_template(path) else "kept ", path))
    exdir = os.path.join(workdir, excludes.EXCLUDES_DIR)
    click.echo("%s %s" % ("wrote" if excludes.write_template(exdir) else "kept ",
                          os.path.join(exdir, excludes.SYSTEM_FILE)))
    click.echo("Edit %s (image_name at least), then run: go2aliyun check --workdir %s"
               % (path, workdir))



TOKEN_HELP = " ".join([
    "the one-time token printed by the receiver; it shows in the process list, so",
    "prefer the GO2ALIYUN_TOKEN environment variable or receiver.token in client_data"])


@cli.command()
@click.option("--config", "config_path", metavar="FILE", default=None,
              help="user_config.json to use (default: WORKDIR/user_config.json)")
@click.option("--workdir", default=".", metavar="DIR", help=WORKDIR_HELP)
@click.option("--root", "root", default="/", metavar="DIR", help=ROOT_HELP)
@click.option("--receiver", metavar="ADDR",
              help="the receiver (intermediate instance): HOST or HOST:PORT (default port 8080)")
@click.option("--token", metavar="T", envvar="GO2ALIYUN_TOKEN", show_envvar=True,
              help=TOKEN_HELP)
@click.option("--fingerprint", metavar="FP",
              help="SHA-256 fingerprint of the receiver's certificate (as it printed it); "
              "optional: the receiver proves it knows the token before it is sent")
@click.option("--sync-only", "sync_only", is_flag=True,
              help="run one delta pass and stop; repeat while the server keeps working")
@click.option("--cutover", is_flag=True,
              help="the final pass (stop applications first), then make the image")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.option("--no-check", is_flag=True,
              help="go on despite preflight blockers (`go2aliyun check`), e.g. to copy a "
                   "system that will not boot as it is")
@click.option("--receiver-image", metavar="IMAGE_ID", default=None,
              help="all-in-one mode (AccessKeys and no --receiver): the receiver appliance "
                   "image to start the intermediate instance from (default: the region's "
                   "Debian 12 image, the receiver installed at first boot: slower)")
@click.option("--source-cidr", metavar="ADDR[/N]", default=None,
              help="all-in-one mode: the address the cloud sees this server come from, the "
                   "only one admitted to the receiver (default: this server's outgoing "
                   "address when it is public)")
@click.option("--instance-type", metavar="TYPE", default=None,
              help="all-in-one mode: instance type of the intermediate instance "
                   "[default: ecs.g7.large]")
@click.option("--ram-role", metavar="ROLE", default=None,
              help="all-in-one mode: RAM role for the intermediate instance, so the receiver "
                   "can snapshot its disks and create the image")
@click.option("--private", is_flag=True, default=None,
              help="all-in-one mode, VPC intranet: no public address for the intermediate "
                   "instance; needs vpc_id and vswitch_id in client_data")
@click.option("--pip-index", metavar="URL", default=None,
              help="all-in-one mode without --receiver-image: package index the instance "
                   "installs go2aliyun from [default: Alibaba's PyPI mirror]")
@click.option("--wheel-url", metavar="URL", default=None,
              help="all-in-one mode without --receiver-image: install go2aliyun on the "
                   "instance from this wheel (e.g. in OSS) instead")
@click.option("--cloud-endpoint", default=None, hidden=True,
              help="API endpoint HOST:PORT instead of Alibaba Cloud's (tests)")
@click.option("--cloud-protocol", default="https", hidden=True,
              type=click.Choice(["https", "http"]))
@click.option("--cloud-poll-interval", default=5.0, type=float, hidden=True,
              help="seconds between two status checks while waiting for the cloud")
@click.option("--io-timeout", default=300, type=int, hidden=True,
              help="seconds without progress before a transfer counts as broken")
@click.option("--retries", default=3, type=int, hidden=True,
              help="how often a broken transfer is retried within one run")
@config_options
@click.pass_context
def migrate(ctx, config_path, workdir, root, receiver, token, fingerprint, sync_only, cutover,
            yes, no_check, receiver_image, source_cidr, instance_type, ram_role, private,
            pip_index, wheel_url, cloud_endpoint,
            cloud_protocol, cloud_poll_interval, io_timeout, retries, overrides, legacy):
    """Migrate this server: send the manifest, push every disk, make the image.

    Reruns continue where the last run stopped (state in WORKDIR/client_data). The
    receiver address, fingerprint and token may also come from client_data
    (receiver.address, receiver.fingerprint, receiver.token); the token may come from
    the GO2ALIYUN_TOKEN environment variable so it need not appear in argv.

    All-in-one mode: with access_id and secret_key in user_config.json (or the
    ALIBABA_CLOUD_ACCESS_KEY_* environment) and no receiver named, it starts the
    intermediate instance itself (from --receiver-image, or else the region's Debian 12
    image with the receiver installed at first boot), migrates into it and releases it
    once the image is ready. Needs Python 3.8+ and the cloud extra:
    pip install 'go2aliyun[cloud]'.
    """
    if sync_only and cutover:
        raise click.UsageError("--sync-only and --cutover exclude each other")
    if legacy.get("clear_data"):
        _clear(workdir)
    mode = mig.SYNC_ONLY if sync_only else (mig.CUTOVER if cutover else mig.FULL)
    opts = mig.Options(
        workdir=workdir, config=config_path, root=root, receiver=receiver, token=token,
        fingerprint=fingerprint, mode=mode, yes=yes or legacy.get("no_enter_key"),
        progressfile=legacy.get("progress_file"), io_timeout=io_timeout, retries=retries,
        no_check=no_check,
        launch=allinone.LaunchOptions(
            receiver_image=receiver_image, source_cidr=source_cidr,
            instance_type=instance_type, ram_role=ram_role, private=private,
            pip_index=pip_index, wheel_url=wheel_url,
            endpoint=cloud_endpoint,
            protocol=cloud_protocol, poll_interval=cloud_poll_interval),
        overrides=overrides, echo=lambda text: click.echo(text, err=True),
        confirm=lambda q: click.confirm(q, default=False, err=True))
    try:
        outcome = mig.migrate(opts, verbose=ctx.obj.get("verbose"))
    except Go2AliyunError as e:
        click.echo(mig.NOT_FINISHED)
        click.echo("reason [%s]: %s" % (e.code, redact(str(e))))
        click.echo("log: %s" % getattr(e, "log_path", "-"))
        raise click.exceptions.Exit(e.exit_code) from None
    except click.exceptions.Abort:
        click.echo(mig.NOT_FINISHED)
        click.echo("reason [usage.aborted]: not confirmed (use --yes to run unattended)")
        raise
    except KeyboardInterrupt as e:  # Ctrl-C: the seed's banner (the hint went to stderr)
        click.echo(mig.NOT_FINISHED)
        click.echo("reason [usage.interrupted]: interrupted (Ctrl-C); run the same command "
                   "again to go on")
        click.echo("log: %s" % getattr(e, "log_path", "-"))
        raise click.exceptions.Exit(130) from None
    except Exception as e:  # noqa: BLE001 - a bug: still say so the seed's way
        click.echo(mig.NOT_FINISHED)
        click.echo("reason [internal]: %s: %s" % (type(e).__name__, redact(str(e))))
        click.echo("log: %s (it holds the traceback)" % getattr(e, "log_path", "-"))
        raise click.exceptions.Exit(1) from None
    if outcome.finished:
        click.echo(mig.FINISHED)
        click.echo(outcome.message)
    else:
        click.echo(outcome.message)
    click.echo("log: %s" % outcome.log_path)


@cli.command()
@click.option("--workdir", default=".", metavar="DIR", help=WORKDIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="print client_data and the receiver's "
              "migration document as JSON")
@click.option("--offline", is_flag=True, help="do not ask the receiver, show client_data only")
def status(workdir, as_json, offline):
    """Show where the migration stands (client_data and, if reachable, the receiver)."""
    data = clientdata.load(workdir)
    doc = None
    problem = None
    sdir = clientdata.session_dir(workdir)
    recv = data.get("receiver") or {}
    cert = os.path.join(sdir, sess.CERT_FILE)
    if not offline and data.get("migration_id") and os.path.exists(cert):
        try:
            client = sess.Client(recv.get("address"),
                                 recv.get("fingerprint") or sess.ca_fingerprint(sdir), cert=cert,
                                 key=os.path.join(sdir, sess.KEY_FILE), timeout=10)
            doc = client.migration()
        except Go2AliyunError as e:
            problem = "%s [%s]" % (e, e.code)
    if as_json:
        shown = dict(data)
        if shown.get("receiver"):
            shown["receiver"] = dict(shown["receiver"])
            if shown["receiver"].get("token"):
                shown["receiver"]["token"] = REDACTED
        click.echo(json.dumps({"client_data": shown, "receiver": doc, "problem": problem},
                              indent=2, sort_keys=True))
        return
    if not data:
        click.echo("No migration yet (client_data is empty).")
        return
    click.echo("migration: %s" % (data.get("migration_id") or "-"))
    click.echo("receiver:  %s" % (recv.get("address") or "-"))
    click.echo("status:    %s" % (data.get("status") or "-"))
    cp = data.get("current_pass")
    if cp:
        click.echo("pass:      %s%s%s" % (cp.get("number"), " (final)" if cp.get("final") else "",
                                          "" if cp.get("finished") else " (unfinished)"))
    for disk, d in sorted((data.get("disks") or {}).items()):
        click.echo("disk %-8s %s, %s files, %s bytes (pass %s)" % (
            disk, d.get("state"), d.get("files", "-"), d.get("bytes", "-"), d.get("number")))
    if doc is not None:
        p = doc.get("progress") or {}
        click.echo("receiver state: %s %s%% %s" % (doc.get("state"), p.get("percent", 0),
                                                   p.get("message") or ""))
        if doc.get("error"):
            click.echo("receiver error: %s" % json.dumps(doc["error"]))
    elif problem:
        click.echo("receiver: not reachable: %s" % problem)


@cli.command()
@click.option("--workdir", default=".", metavar="DIR", help=WORKDIR_HELP)
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
def clear(workdir, yes):
    """Reset client_data and forget the session (the seed's --cleardata); an all-in-one
    launch record (cloud_state.json) is put aside once its resources are released."""
    if not yes:
        click.confirm("Forget the migration recorded in %s?" % clientdata.path_in(workdir),
                      abort=True, err=True)
    _clear(workdir)
    click.echo("client_data cleared.")


def _clear(workdir):
    """Forget the migration: client_data and the session, and an all-in-one launch
    record whose resources are released (refused while some are not)."""
    kept = allinone.forget(workdir)
    if kept:
        click.echo("the launch record is kept as %s" % kept)
    clientdata.clear(workdir)


@cli.command("tls-bridge", hidden=True)
@click.argument("host")
@click.option("--port", type=int, default=None, help="data port (env GO2ALIYUN_BRIDGE_PORT)")
@click.option("--fingerprint", default=None, help="pin (env GO2ALIYUN_BRIDGE_FINGERPRINT)")
@click.option("--cert", default=None, help="client certificate (env GO2ALIYUN_BRIDGE_CERT)")
@click.option("--key", default=None, help="client key (env GO2ALIYUN_BRIDGE_KEY)")
def tls_bridge(host, port, fingerprint, cert, key):
    """rsync's RSYNC_CONNECT_PROG: relay stdin/stdout to the receiver's data channel."""
    code = tlsbridge.run_bridge(host, port=port, fingerprint=fingerprint, cert=cert, key=key)
    if code:
        raise click.exceptions.Exit(code)

def main(argv=None):
    """Entry point: run the click group; errors become exit codes (wire/climain.py)."""
    return run_click(cli, argv, "go2aliyun")


if __name__ == "__main__":
    sys.exit(main())
