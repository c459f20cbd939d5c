"""Real recordings anyone on Debian or Ubuntu can fetch: sample libraries shipped as Debian packages.

`apt-get download` fetches the packages (no installation, no root beyond the package lists) and `dpkg -x`
unpacks each into its own folder; this module then lists their audio files as a dataset in the `listing`
format (`<dir>/listing.csv`: path, label, split, plus where each file came from and under which license).

Three datasets:
  sounds  categories of real recorded sounds: `sonic-pi-samples` (CC0 recordings: drums, tabla, guitar,
          ambience, ...), `hydrogen-data` and `hydrogen-drumkits` (acoustic and electronic drum kits, the
          instrument names of each kit's drumkit.xml naming its files), `lmms-common` (drum, bass and
          instrument samples). Categories come from file and instrument names (CATEGORY_RULES); a file no
          rule names is left out. A drum kit is one recording source: all its files go to one split, so
          the test sounds come from kits the model never heard. Files of packs without such a source are
          split per category by position in name order.
  speech  real recorded speech: the Asterisk prompt packages, one voice each (8 kHz). The label is the
          voice; with five voices, every voice appears in every split and its prompts are split 70/15/15.
  all     every real sound the project can fetch, for pretraining (egs/pretrain_sounds): the categories of
          `sounds`, every prompt of `speech` as one category "speech", and the embedded synthetic categories
          (local/data/synth_sounds.py, rendered once into <dir>/synth/, CC0) as "synth_<name>".

Each file's license is the one of the most specific stanza of its package's machine-readable
`debian/copyright` (DEP-5) that names it, else the package's `Files: *` stanza; `copyright` names the file.
Unreadable or empty files are named and left out. Nothing is written until the listing is complete.
"""
import argparse
import fnmatch
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import yaml

from local.common import io_utils
from local.common.errors import RecipeError, exit_on_recipe_error
from local.data.sources import SPLITS, audio_info
from local.data.synth_sounds import CATEGORIES as SYNTH_CATEGORIES
from local.data.synth_sounds import render

SOUND_PACKAGES = ("sonic-pi-samples", "hydrogen-data", "hydrogen-drumkits", "lmms-common")
SPEECH_PACKAGES = {"asterisk-core-sounds-en-wav": "en", "asterisk-core-sounds-fr-wav": "fr",
                   "asterisk-core-sounds-it-wav": "it", "asterisk-core-sounds-ru-wav": "ru",
                   "asterisk-prompt-it-menardi-wav": "it_menardi"}
AUDIO = (".wav", ".flac", ".ogg")
KINDS = ("sounds", "speech", "all")
SYNTH_CLIPS_PER_CATEGORY = 40  # kind "all": as many as a drum category of the sound packages holds
LISTING_VERSION = 1  # raise when the listing rules change, so that older listings are rebuilt
FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
LISTING_COLUMNS = ["path", "label", "split", "source", "package", "version", "license", "copyright"]

# (category, pattern) in order, the first match wins; matched against the lower-cased file stem with the
# kit's instrument name in front, words split at '_', '-', ' ' and digits. Loops and beats (several
# instruments at once) and synthetic waveforms are never matched.
CATEGORY_RULES = (
    ("excluded", r"\b(loop|loops|beat|beats|break|breakbeat|jungle|waveform|shape|sweep|empty|fx|zap|glitch)\b"),
    ("tabla", r"\btabla\b"),
    ("kick", r"\b(kick|bd|bassdrum|kik)\b|bass drum|\bdrum bass\b"),
    ("snare", r"\b(snare|sn|sd|rsnare|jsnare)\b"),
    ("hihat", r"\b(hi ?hat|hh|hhat|hat|chh|ohh|hhclosed|hhopen|hhpedal|hihatclosed|hihatopen|hihatfoot|hatclosed|"
              r"hatopen|hatpedal|hatsemiopen|closehihat|openhat|pedalhihat)\b"),
    ("cymbal", r"\b(crash|ride|cymbal|china|splash|cc|rc|crashride|cym)\b"),
    ("tom", r"\b(tom|toms|floortom|ft|t1|t2|tomh|syntom)\b|\btom (hi|lo|low|mid)\b"),
    ("rim", r"\b(stick|sidestick|rim|rimclick|rs|clav)\b|side stick|rim click"),
    ("clap", r"\b(clap|handclap|claps|fingersnap|snap)\b"),
    ("cowbell", r"\bcowbell\b"),
    ("bell", r"\b(bell|agogo|triangle|chime|chimes|clave)\b"),
    ("shaker", r"\b(shaker|maraca|maracas|tamb|tambourine|cabasa)\b"),
    ("hand_drum", r"\b(conga|bongo|djembe|cajon|dununba|kenkeni|sangban|bongohi|bongolo|congahi|congalo)\b"),
    ("bass", r"\b(bass|basses|acid|tb303)\b"),
    ("guitar", r"\b(guit|guitar|strum)\b"),
    ("ambience", r"\bambi\b"),
    ("keys", r"\b(piano|rhodes|organ|keys|epiano)\b"),
    ("strings", r"\b(strings|stringsnpads|violin|cello|pad|pads)\b"),
)
_RULES = [(name, re.compile(pattern)) for name, pattern in CATEGORY_RULES]


def words(text):
    """'PearlKick-Hard' -> 'pearl kick hard'; 'bd_01' -> 'bd 01'; 'HiHatClosed-0' -> 'hi hat closed 0'."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)  # camel case
    text = re.sub(r"[_\-\s.]+", " ", text.lower())
    return re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", text).strip()


def category(name):
    """The category a file or instrument name belongs to, or None (left out)."""
    text = words(name)
    for label, pattern in _RULES:
        if pattern.search(text) or pattern.search(text.replace(" ", "")):
            return None if label == "excluded" else label
    return None


# ---------------------------------------------------------------------------------------------- fetching

def _run(command, cwd, what):
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise RecipeError(f"{command[0]} not found: {what} needs Debian/Ubuntu tools (apt-get, dpkg-deb). "
                          f"Copy the .deb files into {cwd} by other means, or run on Debian/Ubuntu.") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RecipeError(f"{' '.join(command)} failed in {cwd}: {last}. If a package is unknown, run "
                          f"'apt-get update' (as root) so the package lists are there.")


def deb_file(debs, package):
    found = sorted(Path(debs).glob(f"{package}_*.deb"))
    return found[-1] if found else None


def deb_version(path):
    """'hydrogen-data_1.2.0~beta1+dfsg-1_all.deb' -> '1.2.0~beta1+dfsg-1' (apt-get quotes ':' as %3a)."""
    return unquote(Path(path).name.split("_")[1])


def fetch(out_dir, packages):
    """Download the missing .deb files into out_dir/debs and unpack each into out_dir/<package>/.
    Returns {package: version}. A finished unpacking is marked, so an interrupted one is redone."""
    out_dir = Path(out_dir)
    debs = out_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if deb_file(debs, p) is None]
    if missing:
        print(f"  fetching {', '.join(missing)} with apt-get download into {debs}", flush=True)
        _run(["apt-get", "download", *missing], debs, "fetching the packages")
    versions = {}
    for package in packages:
        deb = deb_file(debs, package)
        if deb is None:
            raise RecipeError(f"apt-get download left no {package}_*.deb in {debs}")
        versions[package] = deb_version(deb)
        target, marker = out_dir / package, out_dir / package / ".unpacked"
        if marker.is_file() and marker.read_text().strip() == deb.name:
            continue
        partial = out_dir / f".{package}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        print(f"  unpacking {deb.name}", flush=True)
        _run(["dpkg-deb", "-x", str(deb), str(partial)], out_dir, "unpacking the packages")
        (partial / ".unpacked").write_text(deb.name + "\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return versions


# ---------------------------------------------------------------------------------------------- licenses

def copyright_stanzas(path):
    """[(file patterns, license)] of a DEP-5 copyright file, in file order; [] if it is not one."""
    if not Path(path).is_file():
        return []
    stanzas = []
    for block in re.split(r"\n\s*\n", Path(path).read_text(errors="replace")):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1].isspace() and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip()] = value.strip()
        if "Files" in fields and "License" in fields:
            stanzas.append((fields["Files"].split(), fields["License"].split()[0] if fields["License"] else ""))
    return stanzas


def license_of(relative_path, stanzas, kit=None):
    """License of an installed file: the stanza whose pattern names it (by file name, or its drum kit's
    `drumkits/<kit>.h2drumkit` archive) and is most specific (longest), else the `Files: *` stanza."""
    name = Path(relative_path).name
    best, best_len, default = None, -1, ""
    for patterns, lic in stanzas:
        for pattern in patterns:
            if pattern == "*":
                default = default or lic
                continue
            hit = fnmatch.fnmatch(name, pattern.rsplit("/", 1)[-1]) and pattern.rsplit("/", 1)[-1] != "*"
            hit = hit or (kit is not None and pattern.rsplit("/", 1)[-1] == f"{kit}.h2drumkit")
            if hit and len(pattern) > best_len:
                best, best_len = lic, len(pattern)
    return best or default or "see copyright file"


# ---------------------------------------------------------------------------------------------- listing

def _kit_instruments(kit_dir):
    """{file name: instrument name} from a Hydrogen kit's drumkit.xml (empty when there is none)."""
    xml = Path(kit_dir) / "drumkit.xml"
    if not xml.is_file():
        return {}
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        return {}
    names = {}
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "instrument":
            continue
        name = next((c.text or "" for c in element if c.tag.rsplit("}", 1)[-1] == "name"), "")
        for f in element.iter():
            if f.tag.rsplit("}", 1)[-1] == "filename" and f.text:
                names[Path(f.text).name] = name
    return names


def sound_entries(out_dir, versions):
    """[(entry dict)] for every audio file of the sound packages a category rule names, with its source."""
    out_dir = Path(out_dir)
    entries, unnamed = [], 0
    for package in (p for p in versions if p in SOUND_PACKAGES):
        root = out_dir / package
        stanzas = copyright_stanzas(root / "usr/share/doc" / package / "copyright")
        instruments = {}
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO and p.is_file()):
            kit = path.parent.name if path.parent.parent.name == "drumkits" else None
            if kit is not None and kit not in instruments:
                instruments[kit] = _kit_instruments(path.parent)
            instrument = instruments.get(kit, {}).get(path.name, "") if kit else ""
            # lmms keeps categories in folders (basses/, stringsnpads/): the folder counts for those files
            folder = path.parent.name if package == "lmms-common" else ""
            # a kit's instrument name decides (its file names can be anything: rumpf's are beats_06-38.flac)
            label = category(instrument) if instrument.strip() else category(path.stem)
            label = label or (category(folder) if folder not in ("", "drums") else None)
            if label is None:
                unnamed += 1
                continue
            rel = path.relative_to(out_dir)
            entries.append({"path": str(rel), "label": label, "source": f"{package}/{kit}" if kit else "",
                            "package": package, "version": versions[package],
                            "license": license_of(rel, stanzas, kit),
                            "copyright": f"{package}/usr/share/doc/{package}/copyright"})
    print(f"  sounds: {len(entries)} files named by a category rule, {unnamed} other audio files left out", flush=True)
    return entries


def speech_entries(out_dir, versions):
    out_dir = Path(out_dir)
    entries = []
    for package, voice in SPEECH_PACKAGES.items():
        if package not in versions:
            continue
        root = out_dir / package
        stanzas = copyright_stanzas(root / "usr/share/doc" / package / "copyright")
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO and p.is_file()):
            rel = path.relative_to(out_dir)
            entries.append({"path": str(rel), "label": voice, "source": "", "package": package,
                            "version": versions[package], "license": license_of(rel, stanzas),
                            "copyright": f"{package}/usr/share/doc/{package}/copyright"})
    print(f"  speech: {len(entries)} prompts of {len({e['label'] for e in entries})} voices", flush=True)
    return entries


def synth_entries(out_dir, clips_per_category=None, sample_rate=16000, seed=0):
    """The embedded synthetic categories as files of the pretraining set: <out_dir>/synth/<name>/<name>_NNN.wav,
    2.5-5 s each, drawn from their own seeded streams (the same clips on every machine), labelled synth_<name>."""
    from local.common import seeding

    entries = []
    for index, name in enumerate(SYNTH_CATEGORIES):
        for clip in range(clips_per_category or SYNTH_CLIPS_PER_CATEGORY):
            rel = Path("synth") / name / f"{name}_{clip:03d}.wav"
            if not (Path(out_dir) / rel).is_file():
                rng = seeding.stream("synth_sounds", seed, index, clip)
                audio = render(name, rng, sample_rate, rng.uniform(2.5, 5.0))
                io_utils.write_wav(Path(out_dir) / rel, audio, sample_rate, subtype="PCM_16")
            entries.append({"path": str(rel), "label": f"synth_{name}", "source": "", "package": "synth",
                            "version": "", "license": "CC0-1.0", "copyright": "local/data/synth_sounds.py"})
    print(f"  synth: {len(entries)} clips of {len(SYNTH_CATEGORIES)} categories", flush=True)
    return entries


def assign_splits(entries, fractions=FRACTIONS):
    """Give every entry a split. Entries with a `source` (a drum kit) go to one split per source, by the
    greedy rule of stratified group splits: largest source first, each to the split whose per-category
    shortfall (fraction x the category's files, minus what it holds) it fills most, ties to the split
    furthest below its share of files. The others are split per category by position in name order
    (first 70 % train, next 15 % val, last 15 % test, rounded half up)."""
    grouped = {}
    for e in entries:
        if e["source"]:
            grouped.setdefault(e["source"], []).append(e)
    per_category = pd.Series([e["label"] for group in grouped.values() for e in group]).value_counts().to_dict()
    total = max(sum(per_category.values()), 1)
    held = {s: dict.fromkeys(per_category, 0) for s in SPLITS}
    for source in sorted(grouped, key=lambda name: (-len(grouped[name]), name)):
        kit = pd.Series([e["label"] for e in grouped[source]]).value_counts().to_dict()

        def fills(split):
            shortfall = sum(min(n, max(0.0, fractions[split] * per_category[c] - held[split][c]))
                            for c, n in kit.items())
            return shortfall, -sum(held[split].values()) / total / fractions[split]

        split = max(SPLITS, key=fills)
        for e in grouped[source]:
            e["split"] = split
        for c, n in kit.items():
            held[split][c] += n
    per_label = {}
    for e in entries:
        if not e["source"]:
            per_label.setdefault(e["label"], []).append(e)
    for files in per_label.values():
        files.sort(key=lambda e: e["path"])
        n = len(files)
        bounds = [0, int(fractions["train"] * n + 0.5), int((fractions["train"] + fractions["val"]) * n + 0.5), n]
        for i, split in enumerate(SPLITS):
            for e in files[bounds[i] : bounds[i + 1]]:
                e["split"] = split
    return entries


def keep_readable(entries, out_dir):
    kept, unreadable = [], []
    for e in entries:
        try:
            audio_info(Path(out_dir) / e["path"])
            kept.append(e)
        except RecipeError as err:
            unreadable.append(f"{e['path']} ({str(err).rsplit(': ', 1)[-1].split('. Remove')[0]})")
    if unreadable:
        print(f"  left out {len(unreadable)} unreadable or empty file(s): " + "; ".join(unreadable), flush=True)
    return kept, unreadable


def keep_categories_in_every_split(entries, min_per_split):
    """Only labels with at least min_per_split[s] files in every split s (the others are named)."""
    df = pd.DataFrame(entries)
    counts = df.groupby(["label", "split"]).size().unstack(fill_value=0).reindex(columns=list(SPLITS), fill_value=0)
    enough = counts[(counts[list(SPLITS)] >= pd.Series(min_per_split)).all(axis=1)].index
    dropped = {label: counts.loc[label].to_dict() for label in counts.index if label not in enough}
    if dropped:
        print(f"  left out categories with too few files in a split (need {min_per_split}): {dropped}", flush=True)
    return [e for e in entries if e["label"] in enough], counts.loc[enough]


def build(out_dir, kind, min_per_split=None):
    """Fetch, unpack and list one dataset ('sounds' or 'speech') into out_dir; returns the listing path.
    A listing already made from the same packages is kept."""
    if kind not in KINDS:
        raise RecipeError(f"unknown Debian dataset {kind!r}; known: {', '.join(KINDS)}")
    out_dir = Path(out_dir)
    packages = list(SOUND_PACKAGES if kind == "sounds" else SPEECH_PACKAGES if kind == "speech"
                    else (*SOUND_PACKAGES, *SPEECH_PACKAGES))
    min_per_split = min_per_split or ({"train": 20, "val": 5, "test": 5} if kind == "speech"
                                      else {"train": 6, "val": 2, "test": 2})
    listing, meta = out_dir / "listing.csv", out_dir / "listing.yml"
    versions = fetch(out_dir, packages)
    settings = {"kind": kind, "listing_version": LISTING_VERSION, "packages": versions,
                "rules": [list(r) for r in CATEGORY_RULES] if kind != "speech" else None,
                "fractions": FRACTIONS, "min_per_split": min_per_split}
    if listing.is_file() and meta.is_file() and yaml.safe_load(meta.read_text()).get("settings") == settings:
        print(f"  {listing} is up to date; kept", flush=True)
        return listing
    if kind == "all":  # every voice is one category, and the synthetic categories join
        entries = (sound_entries(out_dir, versions)
                   + [dict(e, label="speech") for e in speech_entries(out_dir, versions)] + synth_entries(out_dir))
    else:
        entries = sound_entries(out_dir, versions) if kind == "sounds" else speech_entries(out_dir, versions)
    entries, unreadable = keep_readable(entries, out_dir)
    entries, counts = keep_categories_in_every_split(assign_splits(entries), min_per_split)
    if not entries:
        raise RecipeError(f"no category of {out_dir} has enough files in every split ({min_per_split})")
    df = pd.DataFrame(entries)[LISTING_COLUMNS].sort_values(["label", "path"])
    io_utils.write_csv(df, listing)
    debs = out_dir / "debs"
    io_utils.write_yaml({"settings": settings, "n_files": len(df),
                         "download_bytes": sum(deb_file(debs, p).stat().st_size for p in packages),
                         "files_per_label_and_split": {k: {s: int(v) for s, v in row.items()}
                                                       for k, row in counts.iterrows()},
                         "licenses": df["license"].value_counts().to_dict(), "unreadable": unreadable}, meta)
    print(f"  wrote {listing}: {len(df)} files, {df['label'].nunique()} labels\n"
          + counts.to_string(), flush=True)
    return listing


@exit_on_recipe_error
def main(argv=None):
    parser = argparse.ArgumentParser(description="Fetch and list a real-recordings dataset from Debian packages.")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    build(args.out_dir, args.kind)


if __name__ == "__main__":
    sys.exit(main())
