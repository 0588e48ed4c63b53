"""Number formatting shared by every table."""


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'; with unit 'B' uses binary prefixes (KiB, MiB)."""
    if n is None:
        return ""
    if unit == "B":
        for prefix in ("B", "KiB", "MiB", "GiB"):
            if abs(n) < 1024 or prefix == "GiB":
                return f"{n:.0f} B" if prefix == "B" else f"{n:.2f} {prefix}"
            n /= 1024
    for prefix in ("", " K", " M", " G", " T"):
        if abs(n) < 1000 or prefix == " T":
            return f"{n:.0f}{prefix}{unit}" if prefix == "" else f"{n:.2f}{prefix}{unit}"
        n /= 1000
    return str(n)
