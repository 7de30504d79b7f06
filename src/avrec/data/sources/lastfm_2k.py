"""``lastfm-2k``: hetrec2011-lastfm-2k, 92,834 user–artist play counts, 1,892 users, 17,632 artists."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from avrec.data.dataset import Dataset
from avrec.data.io import DataConfig
from avrec.data.sources.base import Frames, load_copy
from avrec.data.sources.download import GROUPLENS, Source, locate
from avrec.errors import DataError

NAME = "lastfm-2k"
SOURCE = Source(
    f"{GROUPLENS}/hetrec2011/hetrec2011-lastfm-2k.zip",
    "user_artists.dat",
    members_sha256={
        "artists.dat": "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
        "tags.dat": "e95175f259be4c0c47644ae23d66131cd6d5767142a1405000e79f5584691d70",
        "user_artists.dat": "001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b",
        "user_friends.dat": "9a3a8f7fa5f5ec832335e5b58ed69a4cf27c6f6f6afcde62134810eea46445a7",
        "user_taggedartists.dat": "d31fe938fcfeed6f0059f37a36b156f63674d073fc2553e5cc9dc1595e365bc7",
    },
    local_names=("hetrec2011-lastfm-2k", "lastfm-2k"),
)
CHECKSUM_FILES = ("artists.dat", "user_artists.dat")


def read_frames(folder: str | Path) -> Frames:
    """hetrec2011-lastfm-2k as avrec items (artists with their top tags) and play-count interactions."""
    folder = Path(folder)

    def read(name: str, encoding: str = "utf-8") -> pd.DataFrame:
        p = folder / name
        if not p.exists():
            raise DataError(f"{p}: Last.fm file not found")
        return pd.read_csv(p, sep="\t", dtype=str, encoding=encoding, keep_default_na=False, quoting=3)

    artists = read("artists.dat")
    tags = read("tags.dat", encoding="latin-1").set_index("tagID")["tagValue"]
    assigned = read("user_taggedartists.dat")
    assigned["tag"] = assigned["tagID"].map(tags).fillna("").str.strip().str.lower()
    counts = assigned[assigned["tag"] != ""].groupby(["artistID", "tag"]).size().reset_index(name="n")
    counts = counts.sort_values(["artistID", "n"], ascending=[True, False])
    top_tags = counts.groupby("artistID")["tag"].agg(lambda s: "|".join(s.head(15)))
    items = pd.DataFrame(
        {
            "item_id": artists["id"].str.strip(),
            "title": artists["name"].str.strip(),
            "media_type": "music",
            "artist": artists["name"].str.strip(),
        }
    )
    items["tags"] = items["item_id"].map(top_tags).fillna("")
    plays = read("user_artists.dat").rename(columns={"userID": "user_id", "artistID": "item_id", "weight": "plays"})
    plays["event"] = "play"
    return items, plays


def frames(data_dir: str | Path | None = None) -> Frames:
    """Raw artists and play counts of the local or downloaded copy."""
    return read_frames(locate(NAME, SOURCE, data_dir))


def load(config: DataConfig, data_dir: str | Path | None = None) -> Dataset:
    """The dataset, from ``AVREC_DATA``/``data_dir`` or downloaded once from GroupLens."""
    return load_copy(NAME, SOURCE, read_frames, CHECKSUM_FILES, config, data_dir)


__all__ = ["NAME", "SOURCE", "frames", "load", "read_frames"]
