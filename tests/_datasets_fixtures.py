"""Tiny data sets written in the exact official file formats (generated, never copied from the real files)."""

from __future__ import annotations

import json
import random
from pathlib import Path

GENRES_1M = ["Action", "Comedy", "Drama", "Horror", "Romance"]
MELU_VOCAB = {
    "rate": ["PG-13", "R", "G", "nan"], "genre": ["Comedy", "Drama", "Action", "nan"],
    "director": ["Ann Lee", "Bo Chan", "nan"], "actor": ["Cy Doe", "Di Roe", "Ed Poe", "nan"],
    "gender": ["M", "F"], "age": ["1", "18", "25", "35", "45", "50", "56"],
    "occupation": [str(i) for i in range(21)], "zipcode": ["12345", "54321", "90210"],
}


def world(num_users: int = 40, num_items: int = 30, lo: int = 15, hi: int = 25, seed: int = 0):
    """[(user, item, rating, time)] with 1-based ids; each user rates lo..hi distinct items."""
    rng = random.Random(seed)
    rows, t = [], 10**9
    for u in range(1, num_users + 1):
        for i in sorted(rng.sample(range(1, num_items + 1), rng.randint(lo, hi))):
            t += rng.randint(1, 1000)
            rows.append((u, i, rng.randint(1, 5), t))
    rng.shuffle(rows)
    return rows


def write_ml100k(root: Path, rows=None, num_users: int = 40, num_items: int = 30) -> Path:
    rows = world(num_users, num_items) if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    occupations = ["engineer", "artist", "student"]
    (root / "u.user").write_text("".join(
        f"{u}|{15 + 3 * u}|{'MF'[u % 2]}|{occupations[u % 3]}|{'K7L3N' if u == 2 else f'{u % 10}{u:04d}'}\n"
        for u in range(1, num_users + 1)))
    flags = lambda i: "|".join("1" if g in (i % 19, (i * 7) % 19) else "0" for g in range(19))  # noqa: E731
    (root / "u.item").write_bytes("".join(
        f"{i}|Movie {i} ({1950 + i})|01-Jan-{1950 + i}||http://x/{i}|{flags(i)}\n"
        for i in range(1, num_items + 1)).encode("latin-1"))
    return root


def write_ml1m(root: Path, rows=None, timestamps: bool = True, num_users: int = 40, num_items: int = 30) -> Path:
    rows = world(num_users, num_items) if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    name = "ratings.dat" if timestamps else "ratings_no_timestamps.dat"
    (root / name).write_text("".join(f"{u}::{i}::{r}" + (f"::{t}" if timestamps else "") + "\n"
                                     for u, i, r, t in rows))
    (root / "users.dat").write_text("".join(
        f"{u}::{'MF'[u % 2]}::{['1', '18', '25', '35'][u % 4]}::{u % 21}::{u:05d}\n" for u in range(1, num_users + 1)))
    (root / "movies.dat").write_bytes("".join(
        f"{i}::{'Café ' if i == 1 else 'Movie '}{i} ({1960 + i})::{GENRES_1M[i % 5]}|{GENRES_1M[(i + 2) % 5]}\n"
        for i in range(1, num_items + 1)).encode("latin-1"))
    return root


def write_melu(root: Path, warm_name: str = "warm_state.json", num_users: int = 60, seed: int = 0) -> Path:
    """Users 1..60 (> 45 cold), items 1..140 (> 120 cold; 31..120 only rated by user 7, who has 110 warm ratings;
    user 8 has only 8)."""
    num_items = 140
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, values in MELU_VOCAB.items():
        (root / f"m_{name}.txt").write_text("\n".join(values) + "\n")
    (root / "users.dat").write_text("".join(
        f"{u}::{'MF'[u % 2]}::{MELU_VOCAB['age'][u % 7]}::{u % 21}::{MELU_VOCAB['zipcode'][u % 3]}{'-1234' if u == 3 else ''}\n"
        for u in range(1, num_users + 1)))
    lines = []
    for i in range(1, num_items + 1):
        genre = "N/A" if i == 5 else ", ".join(MELU_VOCAB["genre"][: 1 + i % 3])
        director = "Ann Lee (co-director), Bo Chan" if i % 2 else "Bo Chan"
        lines.append(f"{i}::Film {i}::{1990 + i}::{MELU_VOCAB['rate'][i % 3]}::01 Jan {1990 + i}::{genre}::{director}"
                     f"::Someone (screenplay)::Cy Doe, Ed Poe::Plot of film {i}.::http://poster/{i}.jpg\r\n")
    (root / "movies_extrainfos.dat").write_text("".join(lines), encoding="utf-8", newline="")
    states = {"warm": {}, "user_cold": {}, "item_cold": {}, "user_and_item_cold": {}}
    for u in range(1, num_users + 1):
        cold_user = u > 45
        n = 110 if u == 7 else 8 if u == 8 else rng.randint(14, 25)  # user 7: too many, 8: too few
        warm_items = rng.sample(range(1, 121 if u == 7 else 31), n)
        cold_items = rng.sample(range(121, num_items + 1), rng.randint(13, 20))
        warm_key, cold_key = ("user_cold", "user_and_item_cold") if cold_user else ("warm", "item_cold")
        states[warm_key][str(u)] = warm_items
        states[cold_key][str(u)] = cold_items
    for name, table in states.items():
        x = {u: [str(i) for i in items] for u, items in table.items()}
        y = {u: [rng.randint(1, 5) for _ in items] for u, items in table.items()}
        xname = warm_name if name == "warm" else f"{name}_state.json"
        (root / xname).write_text(json.dumps(x))
        (root / f"{name}_state_y.json").write_text(json.dumps(y))
    return root


def write_csv(path: Path, rows, header=("user", "item", "rating", "time"), sep=",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sep.join(header) + "\n" + "".join(sep.join(map(str, r)) + "\n" for r in rows))
    return path
