"""The Debian real-recordings datasets on a fixture tree in the unpacked packages' layout (no network)."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from local.common.config import load_config
from local.common.errors import RecipeError
from local.data import debian_packages as debian
from local.data.prepare import prepare
from local.data.sources import load_sources

DRUMKITS = "hydrogen-drumkits/usr/share/hydrogen/data/drumkits"
SONIC = "sonic-pi-samples/usr/share/sonic-pi/samples"
KIT_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: someone
License: GPL-2+

Files:
 drumkits/KitB.h2drumkit
 drumkits/KitC.h2drumkit
Copyright: someone else
License: CC0
"""
SONIC_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: Sam
License: MIT

Files: etc/samples/tabla_*.flac
Copyright: a tabla player
License: CC0-1.0
"""


def _sound(path, seed, sr=44100, seconds=0.4, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = (0.2 * rng.standard_normal((int(sr * seconds), channels))
            * np.exp(-np.linspace(0, 5, int(sr * seconds)))[:, None])
    sf.write(path, data, sr)


def _kit(root, kit, instruments, files_per_instrument, seed):
    """A Hydrogen kit: files with uninformative names and the instrument names in drumkit.xml."""
    kit_dir = root / DRUMKITS / kit
    xml = ["<drumkit_info><name>" + kit + "</name><instrumentList>"]
    for i, name in enumerate(instruments):
        xml.append(f"<instrument><id>{i}</id><name>{name}</name>")
        for j in range(files_per_instrument):
            filename = f"s{i:02d}_{j}.flac"
            _sound(kit_dir / filename, seed + 10 * i + j, channels=2)
            xml.append(f"<layer><filename>{filename}</filename></layer>")
        xml.append("</instrument>")
    xml.append("</instrumentList></drumkit_info>")
    (kit_dir / "drumkit.xml").write_text("".join(xml))


@pytest.fixture
def unpacked(tmp_path):
    """The sound packages already fetched and unpacked (their .deb files present and marked as unpacked); audio in
    two of them."""
    root = tmp_path / "debian_sounds"
    for package in debian.SOUND_PACKAGES:  # all of them, or the build would fetch the missing ones
        deb = root / "debs" / f"{package}_1%3a2.0-1_all.deb"
        deb.parent.mkdir(parents=True, exist_ok=True)
        deb.write_bytes(b"!<arch>\n")
        (root / package).mkdir()
        (root / package / ".unpacked").write_text(deb.name + "\n")
        doc = root / package / "usr/share/doc" / package
        doc.mkdir(parents=True)
        (doc / "copyright").write_text(KIT_COPYRIGHT if package.startswith("hydrogen") else SONIC_COPYRIGHT)
    for k, kit in enumerate(("KitA", "KitB", "KitC", "KitD", "KitE", "KitF")):
        _kit(root, kit, ["Kick Drum", "Snare 1", "Closed HH", "Loop 3"], 3 if k < 3 else 2, seed=100 * k)
    for i in range(10):
        _sound(root / SONIC / f"tabla_{i:02d}.flac", 1000 + i)
        _sound(root / SONIC / f"bd_{i:02d}.flac", 2000 + i)
    (root / SONIC / "bd_broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")  # unreadable, as kick04.ogg
    _sound(root / SONIC / "loop_amen.flac", 3000)  # a loop: no category
    return root


def test_category_rules_on_names_from_the_packages():
    expected = {
        "PearlKick-Hard": "kick", "bd_zum": "kick", "drum_bass_hard": "kick", "c3 - bass drum 1": "kick",
        "snare-opaque-normal-mic-rimshot2": "snare", "sd_01": "snare", "elec_hi_snare": "snare",
        "HiHatClosed-0": "hihat", "hhopen_01": "hihat", "808_Hat_Pedal": "hihat", "closehihat3": "hihat",
        "crash16i__ride2": "cymbal", "China-0": "cymbal", "drum_splash_soft": "cymbal",
        "tom-hi-1": "tom", "floortom_01": "tom", "Stick rs_01": "rim", "Pearl Side Stick PearlSideStick-Med": "rim",
        "tabla_ghe1": "tabla", "Djembe1 Slap": "hand_drum", "bass_voxy_c": "bass", "guit_e_slide": "guitar",
        "Clave-Hard": "bell", "Maraca-Soft": "shaker", "EE_Clap_Hard": "clap",
        "loop_amen": None, "beats_01-10": None, "10sine": None, "emptySample": None, "xFX_6": None, "vinyl_hiss": None,
    }
    assert {name: debian.category(name) for name in expected} == expected


def test_dep5_license_lookup():
    stanzas = [(["*"], "GPL-2+"), (["drumkits/KitB.h2drumkit"], "CC0"), (["etc/samples/tabla_*.flac"], "CC0-1.0"),
               (["etc/samples/tabla_ghe1.flac"], "CC-BY-4.0")]
    assert debian.license_of("x/usr/share/sonic-pi/samples/tabla_ghe2.flac", stanzas) == "CC0-1.0"
    assert debian.license_of("x/usr/share/sonic-pi/samples/tabla_ghe1.flac", stanzas) == "CC-BY-4.0"  # most specific
    assert debian.license_of("x/drumkits/KitB/s00_0.flac", stanzas, kit="KitB") == "CC0"
    assert debian.license_of("x/drumkits/KitA/s00_0.flac", stanzas, kit="KitA") == "GPL-2+"
    assert debian.deb_version("asterisk-prompt-it-menardi-wav_1%3a1.4.22+mm20110907-3.1_all.deb") == \
        "1:1.4.22+mm20110907-3.1"


def test_sound_listing_keeps_kits_whole_names_bad_files_and_licenses(unpacked, capsys):
    listing = debian.build(unpacked, "sounds", min_per_split={"train": 2, "val": 1, "test": 1})
    printed = capsys.readouterr().out
    df = pd.read_csv(listing, keep_default_na=False)
    assert "bd_broken.wav" in printed and not df["path"].str.contains("bd_broken").any()
    assert not df["path"].str.contains("loop_amen").any()
    assert not df["label"].isin(["excluded"]).any() and set(df["label"]) == {"kick", "snare", "hihat", "tabla"}
    kits = df[df["source"] != ""]
    assert kits.groupby("source")["split"].nunique().max() == 1  # a kit is in one split
    assert set(kits["split"]) == {"train", "val", "test"}
    # instrument names from drumkit.xml name the files; the loop instrument is left out
    assert len(kits) == 3 * 3 * 3 + 3 * 3 * 2
    # sonic-pi files have no source: per category by name order, 7, 8.5 - 7 (half up: 2) and the rest of 10
    tabla = df[df["label"] == "tabla"].sort_values("path")
    assert tabla["split"].tolist() == ["train"] * 7 + ["val"] * 2 + ["test"] * 1
    lic = dict(zip(df["path"], df["license"]))
    assert {lic[p] for p in df["path"] if "/KitB/" in p} == {"CC0"}
    assert {lic[p] for p in df["path"] if "/KitA/" in p} == {"GPL-2+"}
    assert {lic[p] for p in df["path"] if "tabla_" in p} == {"CC0-1.0"}
    assert {lic[p] for p in df["path"] if "bd_0" in p} == {"MIT"}
    meta = yaml.safe_load((unpacked / "listing.yml").read_text())
    assert meta["settings"]["packages"]["sonic-pi-samples"] == "1:2.0-1" and len(meta["unreadable"]) == 1
    # a second build keeps the listing
    debian.build(unpacked, "sounds", min_per_split={"train": 2, "val": 1, "test": 1})
    assert "up to date; kept" in capsys.readouterr().out


def test_stage_0_and_1_on_the_listing(unpacked, tmp_path):
    debian.build(unpacked, "sounds", min_per_split={"train": 2, "val": 1, "test": 1})
    cfg = load_config("lstm_2src", ["data.format=listing", f"data.source_dir={unpacked}",
                                    "data.file_selection_range=null", "data.mixture_seconds=0.5",
                                    "data.n_mixtures={train: 4, val: 2, test: 2}"])
    data_dir = tmp_path / "data"
    prepare(cfg["data"], data_dir)
    sources, root = load_sources(data_dir)
    assert root == unpacked.resolve() and set(sources["split"]) == {"train", "val", "test"}
    assert len(sources) == len(pd.read_csv(unpacked / "listing.csv"))
    from local.data.views import make_views

    out = make_views(cfg["data"], data_dir)
    assert len(pd.read_csv(out / "test.csv")) == 2
    # the model card's licenses: those listing.csv gives the training split's files, written out here
    from local.data.licenses import training_licenses

    listing = pd.read_csv(unpacked / "listing.csv", keep_default_na=False)
    expected = sorted(set(listing.loc[listing["split"] == "train", "license"].replace("", "unknown")))
    assert training_licenses(data_dir, cfg["data"]) == expected and "unknown" not in expected
    # the listing is the dataset: once edited (a row dropped), the prepared copy is not silently reused
    original = (unpacked / "listing.csv").read_text()
    try:
        (unpacked / "listing.csv").write_text("".join(original.splitlines(keepends=True)[:-1]))
        with pytest.raises(RecipeError, match="was prepared with other settings"):
            prepare(cfg["data"], data_dir)
    finally:
        (unpacked / "listing.csv").write_text(original)
    prepare(cfg["data"], data_dir)  # the same listing again: up to date


def test_listing_errors_name_the_row_and_the_tool(unpacked, tmp_path, monkeypatch):
    (unpacked / "listing.csv").write_text("path,label,split\n" + f"{SONIC}/tabla_00.flac,tabla,training\n")
    cfg = load_config("lstm_2src", ["data.format=listing", f"data.source_dir={unpacked}"])
    with pytest.raises(RecipeError, match=r"listing.csv row 2: split 'training'"):
        prepare(cfg["data"], tmp_path / "data")
    # without apt-get (not Debian, or no PATH), fetching says what is missing and what to do
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RecipeError, match=r"apt-get not found: fetching the packages needs Debian/Ubuntu tools"):
        debian.fetch(tmp_path / "fresh", ["lmms-common"])
    assert not list((tmp_path / "fresh").glob("lmms-common*"))


def test_pretraining_listing_joins_sounds_every_voice_as_speech_and_synth(unpacked, monkeypatch):
    """kind 'all' (egs/pretrain_sounds): the sound categories, every prompt of every voice as "speech" (a prompt
    whose name a sound rule would match stays speech), the synthetic categories rendered as files, with licenses."""
    for package in debian.SPEECH_PACKAGES:
        deb = unpacked / "debs" / f"{package}_1.0-1_all.deb"
        deb.write_bytes(b"!<arch>\n")
        (unpacked / package / "usr/share/doc" / package).mkdir(parents=True)
        (unpacked / package / ".unpacked").write_text(deb.name + "\n")
        (unpacked / package / "usr/share/doc" / package / "copyright").write_text(SONIC_COPYRIGHT)
        for i, name in enumerate(("hello", "goodbye", "bd_kick", "one", "two")):
            _sound(unpacked / package / "usr/share/asterisk/sounds" / f"{name}.wav", 5000 + i, sr=8000)
    monkeypatch.setattr(debian, "SYNTH_CLIPS_PER_CATEGORY", 8)
    listing = debian.build(unpacked, "all", min_per_split={"train": 2, "val": 1, "test": 1})
    df = pd.read_csv(listing, keep_default_na=False)
    synth = {f"synth_{name}" for name in debian.SYNTH_CATEGORIES}
    assert set(df["label"]) == {"kick", "snare", "hihat", "tabla", "speech"} | synth
    speech = df[df["label"] == "speech"]
    assert len(speech) == 5 * len(debian.SPEECH_PACKAGES) and speech["path"].str.contains("bd_kick").sum() == 5
    clips = df[df["label"].isin(synth)]
    assert len(clips) == 8 * len(synth) and set(clips["license"]) == {"CC0-1.0"}
    first = sf.info(str(unpacked / clips["path"].iloc[0]))
    assert first.samplerate == 16000 and 2.5 <= first.duration <= 5.0
