"""How an export's file is described to a person, the same in the ready email and on the
download page: its format in words and its size in binary units."""

from __future__ import annotations


def format_label(format_: str, compression: str, csv_bom: bool) -> str:
    """``CSV with UTF-8 BOM, gzip-compressed``, ``JSONL``, …"""
    label = format_
    if format_ == "CSV" and csv_bom:
        label += " with UTF-8 BOM"
    if compression == "GZIP":
        label += ", gzip-compressed"
    return label


def human_size(byte_count: int) -> str:
    """``1 byte``, ``1023 bytes``, ``1.5 KiB``, ``5.0 GiB``: one decimal from KiB on."""
    if byte_count < 1024:
        return "1 byte" if byte_count == 1 else f"{byte_count} bytes"
    value = float(byte_count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
