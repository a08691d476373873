#!/usr/bin/python3
"""A small client of affinityd's D-Bus API (org.lesionaffinity.Affinity1), written with Debian's
dbus-python (package python3-dbus) to show that any desktop tool can call it, including the
methods that take file descriptors.

    affinity_client.py [--bus system|session|ADDRESS] analyse IMAGE [--mask OUT.png] [--seed N]
    affinity_client.py [--bus ...] models
    affinity_client.py [--bus ...] import WEIGHTS.safetensors [--name NAME] [--set-default]

Every command prints one JSON object on stdout. A D-Bus error is printed as
{"error": "<error name>", "message": "<sentence>"} and the exit code is 1.
"""
import argparse
import fcntl
import json
import os
import sys

import dbus

BUS_NAME = "org.lesionaffinity.Affinity1"
ROOT = "/org/lesionaffinity/Affinity1"
MANAGER = "org.lesionaffinity.Affinity1.Manager"
MODEL = "org.lesionaffinity.Affinity1.Model"
PROPERTIES = "org.freedesktop.DBus.Properties"


def connect(bus):
    """The bus connection: the system or session bus, or a bus at a D-Bus address."""
    if bus == "system":
        return dbus.SystemBus()
    if bus == "session":
        return dbus.SessionBus()
    return dbus.bus.BusConnection(bus)


def plain(value):
    """dbus-python's typed values as plain Python values (for JSON)."""
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Byte, dbus.Int16, dbus.UInt16, dbus.Int32, dbus.UInt32, dbus.Int64, dbus.UInt64)):
        return int(value)
    if isinstance(value, dbus.Double):
        return float(value)
    if isinstance(value, (dbus.String, dbus.ObjectPath)):
        return str(value)
    if isinstance(value, dbus.Dictionary):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (dbus.Array, dbus.Struct, list, tuple)):
        return [plain(v) for v in value]
    return value


def manager(conn):
    return dbus.Interface(conn.get_object(BUS_NAME, ROOT), MANAGER)


def analyse(conn, args):
    """Analyse(h image, a{sv} options) -> a{sv}: the image is passed as an open descriptor."""
    options = dbus.Dictionary({}, signature="sv")
    if args.seed is not None:
        options["seed"] = dbus.UInt64(args.seed)
    with open(args.image, "rb") as image:
        result = manager(conn).Analyse(dbus.types.UnixFd(image), options, timeout=600)
    out = {k: plain(v) for k, v in result.items() if k != "mask_png"}
    # The label map comes back as a sealed memfd: take ownership of the descriptor and read it.
    mask_fd = result["mask_png"].take()
    # A sealed memfd cannot be changed by anyone, the daemon included.
    wanted = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
    try:
        out["mask_sealed"] = fcntl.fcntl(mask_fd, fcntl.F_GET_SEALS) & wanted == wanted
    except OSError:
        out["mask_sealed"] = False
    with os.fdopen(mask_fd, "rb") as mask:
        mask.seek(0)
        png = mask.read()
    out["mask_png_bytes"] = len(png)
    if args.mask:
        with open(args.mask, "wb") as f:
            f.write(png)
        out["mask"] = args.mask
    lesion_area = sum(lesion["area"] for lesion in out.get("lesions", []))
    lung = out.get("lung_field_area")
    if lung:
        out["lesion_share_of_lung_field"] = lesion_area / lung
    return out


def models(conn):
    """ListModels, then every model object's properties."""
    listed = []
    for path in manager(conn).ListModels(dbus.Dictionary({}, signature="sv")):
        props = dbus.Interface(conn.get_object(BUS_NAME, path), PROPERTIES).GetAll(MODEL)
        listed.append({"path": str(path), **{str(k): plain(v) for k, v in props.items()}})
    default = dbus.Interface(conn.get_object(BUS_NAME, ROOT), PROPERTIES).Get(MANAGER, "DefaultModel")
    return {"models": listed, "default": str(default)}


def import_model(conn, args):
    """ImportModel(h weights, a{sv} options) -> o; optionally SetDefaultModel."""
    options = dbus.Dictionary({}, signature="sv")
    if args.name:
        options["name"] = dbus.String(args.name)
    with open(args.weights, "rb") as weights:
        path = manager(conn).ImportModel(dbus.types.UnixFd(weights), options, timeout=600)
    if args.set_default:
        manager(conn).SetDefaultModel(path, dbus.Dictionary({}, signature="sv"), timeout=600)
    return {"model": str(path), "default": bool(args.set_default)}


def main(argv=None):
    parser = argparse.ArgumentParser(description="A dbus-python client of affinityd.")
    parser.add_argument("--bus", default=os.environ.get("AFFINITY_BUS_ADDRESS", "system"),
                        help="system, session or a D-Bus address (default: $AFFINITY_BUS_ADDRESS or system)")
    commands = parser.add_subparsers(dest="command", required=True)
    a = commands.add_parser("analyse", help="analyse one image (PNG, or what a decoder plugin reads)")
    a.add_argument("image")
    a.add_argument("--mask", help="write the label map PNG here")
    a.add_argument("--seed", type=int)
    commands.add_parser("models", help="list the models and their properties")
    i = commands.add_parser("import", help="import a safetensors weights file")
    i.add_argument("weights")
    i.add_argument("--name")
    i.add_argument("--set-default", action="store_true")
    args = parser.parse_args(argv)

    try:
        conn = connect(args.bus)
        if args.command == "analyse":
            out = analyse(conn, args)
        elif args.command == "models":
            out = models(conn)
        else:
            out = import_model(conn, args)
    except dbus.exceptions.DBusException as e:
        print(json.dumps({"error": e.get_dbus_name(), "message": e.get_dbus_message()}))
        return 1
    except OSError as e:
        print(json.dumps({"error": "os", "message": str(e)}))
        return 1
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
