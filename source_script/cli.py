"""The ``go2aliyun`` command (click). Thin: parse options, call the module that does
the work, and turn errors into exit codes in :func:`main` only."""

import json
import sys

import click

from source_script import __version__
from wire.errors import Go2AliyunError
from wire.logs import redact

WORKDIR_HELP = ("work folder holding user_config.json, client_data, Excludes/ and logs/ "
                "(default: the current folder)")
ROOT_HELP = "migrate the system mounted at DIR instead of / (an offline disk, a test host)"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="go2aliyun")
@click.option("-v", "--verbose", is_flag=True, help="show debug messages on the terminal")
@click.pass_context
def cli(ctx, verbose):
    """Move this Linux server into a bootable Alibaba Cloud ECS custom image.

    Typical use: start a receiver (intermediate instance), then run
    `go2aliyun migrate --receiver ADDR --token T --fingerprint FP` as root.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


@cli.command()
@click.option("--root", "root", default="/", metavar="DIR", help=ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def inventory(root, as_json):
    """Print the manifest the receiver will get: OS, kernels, disks, filesystems..."""
    from source_script import inventory as inv

    manifest = inv.collect(root)
    if as_json:
        click.echo(json.dumps(manifest, indent=2, sort_keys=True))
    else:
        click.echo(inv.render_text(manifest))


def main(argv=None):
    """Entry point: run the click group and map our errors to exit codes."""
    try:
        cli.main(args=argv, prog_name="go2aliyun", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return 2 if isinstance(e, click.UsageError) else e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except Go2AliyunError as e:
        click.echo("error [%s]: %s" % (e.code, redact(str(e))), err=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
