"""The ``go2aliyun-cloud`` command (click): launch the intermediate instance, build the
image from it after the receiver has verified the copy, clean up. Thin: read settings,
call launch/finish, turn errors into exit codes in :func:`main` only."""

import json
import os
import sys

import click

from image_build import buildimage
from image_build import finish as finishing
from image_build import launch as launching
from image_build.cloud import make_cloud
from image_build.state import StateFile
from wire import clientdata, config
from wire.climain import run_click
from wire.errors import ConfigError
from wire.logs import register_secret, setup


def user_supplied_network(workdir):
    """vpc_id / vswitch_id / security_group_id set by hand in client_data (the seed's way
    of reusing a VPC for the intranet mode)."""
    data = clientdata.load(workdir)
    return {k: data[k] for k in ("vpc_id", "vswitch_id", "security_group_id") if data.get(k)}


def make_cloud_from(ctx, cfg, region_id=None):
    """``cfg``: a wire.config.Config, or None (keys from the environment)."""
    o = ctx.obj
    if o["provider"] == "local":
        return make_cloud(
            "local", state_dir=o["local_dir"] or os.path.join(o["workdir"], "local-cloud"),
            output_dir=o["output"], address=o["listen"], netns=o["netns"],
            poll_interval=min(o["poll_interval"], 2.0))
    # user_config.json, else the environment: the same order as go2aliyun migrate
    key_id, secret, sts = config.cloud_keys(cfg, os.environ) or ("", "", None)
    register_secret(secret)
    register_secret(sts)
    return make_cloud(
        o["provider"], region_id=region_id or (cfg.region_id if cfg else ""),
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=sts,
        ram_role=o["ram_role_credentials"], use_ram_role=o["use_ram_role"],
        endpoint=o["endpoint"], protocol=o["protocol"],
        metadata_endpoint=o["metadata_endpoint"], poll_interval=o["poll_interval"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workdir", default=".", show_default=True, metavar="DIR",
              help="work folder with user_config.json, client_data and cloud_state.json "
                   "(the record of every cloud resource made for this migration)")
@click.option("--provider", default="aliyun", show_default=True,
              type=click.Choice(["aliyun", "local"]),
              help="which cloud to talk to: aliyun, or local (no cloud: the receiver "
                   "appliance under qemu on this host, the image as qcow2 files)")
@click.option("--local-dir", default=None, metavar="DIR",
              help="local provider: its state folder (instances, disks, snapshots) "
                   "[default: WORKDIR/local-cloud]")
@click.option("--output", default=None, metavar="DIR",
              help="local provider: where images are written [default: LOCAL_DIR/images]")
@click.option("--listen", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="local provider: the host address the instance's ports 8080 and 8703 "
                   "are forwarded on (the address the source uses)")
@click.option("--netns", default=None, hidden=True,
              help="local provider: run qemu in this network namespace (tests)")
@click.option("--endpoint", default=None, metavar="HOST[:PORT]",
              help="API endpoint for both ECS and VPC instead of the regional default "
                   "(a proxy, a test server)")
@click.option("--protocol", default="https", show_default=True,
              type=click.Choice(["https", "http"]), help="protocol for --endpoint")
@click.option("--use-ram-role", is_flag=True,
              help="take temporary keys from this ECS instance's RAM role (metadata service) "
                   "instead of access_id/secret_key")
@click.option("--ram-role-name", "ram_role_credentials", default=None, metavar="ROLE",
              help="with --use-ram-role: the role name (default: ask the metadata service)")
@click.option("--metadata-endpoint", default=None, hidden=True,
              help="reach the metadata service through this HTTP proxy (tests)")
@click.option("--poll-interval", default=5.0, show_default=True, metavar="SECONDS",
              help="seconds between two status checks while waiting for the cloud")
@click.option("-v", "--verbose", is_flag=True, help="show debug messages on the terminal")
@click.pass_context
def cli(ctx, workdir, provider, local_dir, output, listen, netns, endpoint, protocol,
        use_ram_role, ram_role_credentials, metadata_endpoint, poll_interval, verbose):
    """Alibaba Cloud side of go2aliyun: start the intermediate instance
    (INSTANCE_FOR_GOTOALIYUN) that receives the migration, build the custom image, clean up.

    Keys come from user_config.json (access_id, secret_key), else from the environment
    (ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and, for an STS token,
    ALIBABA_CLOUD_SECURITY_TOKEN), the same order as `go2aliyun migrate`, or, on an ECS
    instance, from its RAM role (--use-ram-role). The RAM user needs
    AliyunECSFullAccess and AliyunVPCFullAccess. Errors name the debug log,
    WORKDIR/logs/go2aliyun-cloud.log.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(workdir=workdir, provider=provider, endpoint=endpoint, protocol=protocol,
                   use_ram_role=use_ram_role, ram_role_credentials=ram_role_credentials,
                   metadata_endpoint=metadata_endpoint, poll_interval=poll_interval,
                   verbose=verbose, local_dir=local_dir, output=output, listen=listen,
                   netns=netns)


LOG_NAME = "go2aliyun-cloud.log"
# the debug log of this run, once a command started it: errors name it (main)
_LOG = {"path": None}


def _start_log(ctx):
    """Start the debug log (commands call this first; not for --help)."""
    if _LOG["path"] is None:
        path = os.path.join(ctx.obj["workdir"], "logs", LOG_NAME)
        setup(logfile=path, verbose=ctx.obj["verbose"])
        _LOG["path"] = path


def _state(ctx):
    """The state file; also starts the debug log (not for --help)."""
    _start_log(ctx)
    return StateFile.in_workdir(ctx.obj["workdir"])


@cli.command()
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="user_config.json (default: the one in --workdir)")
@click.option("--receiver-image", default=None, metavar="IMAGE_ID",
              help="the receiver appliance image to start (made by build-image) [default: "
                   "the region's newest official Debian 12 image, the receiver installed "
                   "at first boot: a few minutes slower]")
@click.option("--pip-index", default=None, metavar="URL",
              help="without --receiver-image: package index the instance installs go2aliyun "
                   "from [default: https://mirrors.aliyun.com/pypi/simple/; with --private "
                   "the VPC-internal http://mirrors.cloud.aliyuncs.com/pypi/simple/]")
@click.option("--wheel-url", default=None, metavar="URL",
              help="without --receiver-image: install go2aliyun from this wheel instead")
@click.option("--source-cidr", required=True, metavar="ADDR[/N]",
              help="address of the server being migrated: the only one admitted to ports "
                   "8080 and 8703 (its private address with --private)")
@click.option("--instance-type", default="ecs.g7.large", show_default=True,
              help="instance type of the intermediate instance")
@click.option("--zone", default=None, help="zone (default: the first that offers instances)")
@click.option("--vpc-id", default=None, help="reuse this VPC (never deleted by go2aliyun)")
@click.option("--vswitch-id", default=None, help="reuse this vSwitch (with --vpc-id)")
@click.option("--security-group-id", default=None,
              help="reuse this security group (8080/8703 from --source-cidr are added)")
@click.option("--private", is_flag=True,
              help="VPC intranet: no public address; needs --vpc-id and --vswitch-id (or the "
                   "same keys in client_data)")
@click.option("--bandwidth", default=100, show_default=True, metavar="MBIT",
              help="public outbound bandwidth of the instance, Mbit/s")
@click.option("--ram-role", default=None, metavar="ROLE",
              help="RAM role for the instance, so the receiver can snapshot and create the "
                   "image itself; give it the policy image_build/receiver-ram-policy.json")
@click.option("--no-wait-receiver", is_flag=True,
              help="do not wait for the receiver to start (its line on the instance's "
                   "console, or /healthz on 8080), only for the instance to run")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def launch(ctx, config_path, receiver_image, pip_index, wheel_url, source_cidr,
           instance_type, zone, vpc_id, vswitch_id, security_group_id, private, bandwidth,
           ram_role, no_wait_receiver, as_json):
    """Start the intermediate instance for this migration (resumable).

    Creates or reuses a VPC, a vSwitch and a security group, refuses an image_name that is
    already taken before creating anything, runs INSTANCE_FOR_GOTOALIYUN with one data
    disk for the target system disk and one per data disk of user_config.json, and hands
    the receiver its one-time token and TLS identity through cloud-init user-data. Every
    resource id is written to cloud_state.json before the next call: if this stops
    half-way, run it again and it goes on without duplicates.

    It may run on any machine (a workstation): it waits for the receiver's start line
    on the instance's console (read through the API), so it needs no way in through the
    security group, which admits --source-cidr only.
    """
    _start_log(ctx)
    workdir = ctx.obj["workdir"]
    cfg = config.load(config_path or os.path.join(workdir, config.CONFIG_NAME))
    reuse = user_supplied_network(workdir)
    unsized = [d.index for d in cfg.data_disks if not d.size_gib]
    if unsized:
        raise ConfigError("data disk %s has no data_disk_size" % ", ".join(map(str, unsized)),
                          code="config.data_disk_size",
                          hint="launch must know every target disk's size: set "
                               "data_disk_size in user_config.json")
    settings = launching.LaunchSettings(
        region_id=cfg.region_id, image_name=cfg.image_name,
        receiver_image_id=receiver_image, source_cidr=source_cidr,
        system_disk_size=cfg.system_disk_size or 40,
        data_disks=[(d.index, d.size_gib) for d in cfg.data_disks],
        platform=cfg.platform or "", architecture=cfg.architecture or "x86_64",
        instance_type=instance_type, zone_id=zone,
        vpc_id=vpc_id or reuse.get("vpc_id"), vswitch_id=vswitch_id or reuse.get("vswitch_id"),
        security_group_id=security_group_id or reuse.get("security_group_id"),
        private=private, bandwidth_mbit=bandwidth, ram_role=ram_role,
        wait_receiver=not no_wait_receiver, pip_index=pip_index, wheel_url=wheel_url)
    cloud = make_cloud_from(ctx, cfg)
    result = launching.launch(cloud, _state(ctx), settings)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    click.echo("intermediate instance: %s" % result["instance_id"])
    click.echo("address:     %s" % result["address"])
    click.echo("token:       %s" % result["token"])
    click.echo("fingerprint: %s" % result["fingerprint"])
    click.echo("on the source: go2aliyun migrate --receiver %s --token %s --fingerprint %s" % (
        result["address"], result["token"], result["fingerprint"]))


@cli.command()
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="user_config.json (default: the one in --workdir)")
@click.option("--boot-mode", default="BIOS", show_default=True,
              type=click.Choice(["BIOS", "UEFI"]), help="boot mode of the image")
@click.option("--keep-instance", is_flag=True, help="do not release the instance afterwards")
@click.pass_context
def finish(ctx, config_path, boot_mode, keep_instance):
    """Snapshot the target disks of the launched instance, create the image, release.

    Normally the receiver does this itself once the copy is verified; run it here when
    the receiver has no RAM role. Resumable like launch.
    """
    _start_log(ctx)
    workdir = ctx.obj["workdir"]
    cfg = config.load(config_path or os.path.join(workdir, config.CONFIG_NAME))
    state = _state(ctx)
    if not state.get("instance_id"):
        raise ConfigError("no intermediate instance is recorded in %s" % state.path,
                          code="config.no_instance", hint="run launch first")
    cloud = make_cloud_from(ctx, cfg, region_id=state.get("region_id"))
    image_id = finishing.build_image(
        cloud, state, state.get("instance_id"), cfg.image_name or state.get("image_name"),
        platform=cfg.platform or "Others Linux", architecture=cfg.architecture or "x86_64",
        boot_mode=boot_mode,
        progress=lambda m: click.echo(m, err=True))
    if not keep_instance:
        finishing.release(cloud, state)
    click.echo("image: %s" % image_id)


@cli.command()
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="user_config.json (default: the one in --workdir)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def cleanup(ctx, config_path, yes):
    """Release everything of this migration: recorded in cloud_state.json or tagged
    go2aliyun:migration=<its id> (so what an interrupted call made is found too).

    Deletes the intermediate instance, then the security group, vSwitch and VPC that launch
    made (never ones you supplied), and snapshots no image uses. The image and the
    snapshots it is made of are kept. Prints each thing deleted and kept.
    """
    workdir = ctx.obj["workdir"]
    state = _state(ctx)
    if not state.get("migration_id"):
        click.echo("nothing recorded in %s" % state.path)
        return
    cfg_path = config_path or os.path.join(workdir, config.CONFIG_NAME)
    cfg = config.load(cfg_path) if os.path.exists(cfg_path) else None
    if not yes:
        click.confirm("release the resources recorded for %s?" % state.get("migration_id"),
                      abort=True)
    cloud = make_cloud_from(ctx, cfg, region_id=state.get("region_id"))
    for line in finishing.cleanup(cloud, state).lines():
        click.echo(line)


@cli.command("build-image")
@click.option("--base-image", default=None, metavar="IMAGE_ID",
              help="aliyun: the Debian 12 public image of the region to start from (e.g. "
                   "the id of debian_12_*_x64_20G_alibase_*.vhd)")
@click.option("--region", default=None, metavar="REGION",
              help="aliyun: region to build in [default: region_id of user_config.json in "
                   "--workdir]")
@click.option("--version", "version", default=None, metavar="VERSION",
              help="aliyun: go2aliyun version to install; the image is called "
                   "go2aliyun-receiver-VERSION [default: the version running here]")
@click.option("--pip-index", default=None, metavar="URL",
              help="aliyun: package index pip installs from [default: Alibaba's PyPI "
                   "mirror https://mirrors.aliyun.com/pypi/simple/]")
@click.option("--wheel-url", default=None, metavar="URL",
              help="aliyun: install go2aliyun from this wheel instead (its dependencies "
                   "still come from --pip-index)")
@click.option("--instance-type", default="ecs.g7.large", show_default=True,
              help="aliyun: instance type of the build instance")
@click.option("--zone", default=None, help="aliyun: zone (default: the first that offers "
                                           "instances)")
@click.option("--vpc-id", default=None, help="aliyun: reuse this VPC (never deleted)")
@click.option("--vswitch-id", default=None, help="aliyun: reuse this vSwitch (with --vpc-id)")
@click.option("--bandwidth", default=10, show_default=True, metavar="MBIT",
              help="aliyun: public outbound bandwidth while installing, Mbit/s")
@click.option("--timeout", default=3600, show_default=True, metavar="SECONDS",
              help="aliyun: how long the install and self-check may take")
@click.option("--out", default=None, metavar="FILE",
              help="local: also copy the appliance qcow2 here (default: only the cache)")
@click.option("--cache", default=None, metavar="DIR",
              help="local: cache folder [default: $GO2ALIYUN_CACHE or /var/cache/go2aliyun]")
@click.pass_context
def build_image(ctx, base_image, region, version, pip_index, wheel_url, instance_type, zone,
                vpc_id, vswitch_id, bandwidth, timeout, out, cache):
    """Build the receiver appliance image; prints what `launch --receiver-image` takes.

    With --provider aliyun (resumable, like launch): starts a build instance from
    --base-image in a VPC made for it (no inbound port open) with cloud-init user-data
    that installs the Debian packages the receiver needs and go2aliyun into
    /opt/go2aliyun (pip, from --pip-index or --wheel-url), enables the receiver's systemd
    unit, checks itself and prints `go2aliyun-appliance: ready VERSION` (or `failed:
    REASON`) on the serial console, then powers off. build-image reads the console,
    creates the image go2aliyun-receiver-VERSION from the stopped instance (a taken name
    is refused before anything is made), waits until it is Available and releases the
    instance and the network. Every id goes to build_image_state.json in --workdir first:
    if this stops half-way, run it again. A failed self-check is shown with the end of
    the console; what was made is released.

    With --provider local: a Debian 12 qcow2 (debootstrap, the receiver in a venv at
    /opt/go2aliyun, cloud-init NoCloud, console on ttyS0), cached by its inputs, so a
    rerun with no change is instant. Prints its path.
    """
    if ctx.obj["provider"] == "local":
        # the one seam to the development tooling: a local appliance is built here
        from image_build.dev import appliance

        setup(verbose=ctx.obj["verbose"])
        path = appliance.build(out=out, cache_dir=cache,
                               progress=lambda m: click.echo("build-image: " + m, err=True))
        click.echo(path)
        return
    _start_log(ctx)
    workdir = ctx.obj["workdir"]
    cfg_path = os.path.join(workdir, config.CONFIG_NAME)
    cfg = config.load(cfg_path) if os.path.exists(cfg_path) else None
    settings = buildimage.BuildSettings(
        region_id=region or (cfg.region_id if cfg else ""), base_image_id=base_image,
        version=version, pip_index=pip_index, wheel_url=wheel_url,
        instance_type=instance_type, zone_id=zone, vpc_id=vpc_id, vswitch_id=vswitch_id,
        bandwidth_mbit=bandwidth, timeout=timeout)
    cloud = make_cloud_from(ctx, cfg, region_id=settings.region_id)
    image_id = buildimage.build(cloud, buildimage.state_in(workdir), settings,
                                progress=lambda m: click.echo("build-image: " + m, err=True))
    click.echo(image_id)


def main(argv=None):
    """Entry point: run the click group; errors become exit codes (wire/climain.py) and
    name the debug log, when the command had started it."""
    _LOG["path"] = None
    code = run_click(cli, argv, "go2aliyun-cloud")
    if code and _LOG["path"]:
        click.echo("log: %s" % _LOG["path"], err=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
