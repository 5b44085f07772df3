"""Paraphrase benchmark of the factor stage: free-form captions that say each planted attribute in several wordings.

    .venv/bin/python bench/paraphrase.py [--seeds 10] [--n 400] [--pools A B C D E F] [--shuffled 10] [--cached] [--smoke]

Procedure (printed again with the figures). For each seed, the known-answer generator's attributes of `--n` posters
(outcome = 6 + 0.6 dark + 0.4 cool + 0.5 bw - 0.7 cluttered - 0.3 big title + N(0, 0.5^2)) are written up as a
vision-language model would: each planted attribute's side in one of 4-5 wordings (left unsaid in 15% of the
captions), 1-3 filler sentences that carry no signal, in random order. Six pools of wordings and fillers, written
separately: A, on which the method was built; B, looked at once (one seed), which lowered the similarity floor from
0.25 to 0.15 (abstract wordings of an uncluttered layout stayed apart); C, written afterwards and not tuned to at first,
then inspected for its misses (black and white merged with cool); D, written to develop the answer to them (each side
of a topic split once more by its credits); E, written at the same time as D and left unscored until that change was
final, then run once; its misses (single wordings of black and white grouped with dark or filler wordings, which
they share about two captions with, below the three expected shared captions the said-together rule then waited
for) led to the rule applying from one expected shared caption, chosen on C, D and E; F, written before that change
was tried, its values computed while it was developed, and scored once after it was final. The default variant's model is cross-validated on the captions (5 folds), each fold's model
explains its held-out captions (exact segment Shapley values), and three factor kinds run on the same values:

- concepts (`crossfit_concepts`): groups of segments that say the same thing, split by each fold's model into up and
  down parts and each part again in two (the shipped method);
- concepts, sides only (`levels=1`): the same without the second split;
- n-grams (`crossfit_factors`): phrases of the captions' words, for comparison.

A flagged factor belongs to the attribute side that most of its carriers' segments speak of (the pool knows which wording says
what); it is *unplanted* when most of them are filler. An attribute is recovered when a flagged factor of its sides has
the planted sign. Name fidelity: the share of flagged concepts whose name is a wording of the side they belong to.
With `--shuffled`, the same runs on permuted outcomes of that many seeds (pool A): flagged counts with the "beats the
mean" gate (as the pipeline reports) and without it (the held-out tests alone).

Each run's segment values are kept under .cache/bench-paraphrase/ (delete it to recompute; --smoke keeps nothing).
"""
import argparse, sys, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd

from _results import ROOT, write_result  # noqa: E402
from posterlens.core import load_settings, read_json, read_parquet, write_json, write_parquet
from posterlens.data import EFFECTS, synth_table
from posterlens.explain import crossfit_concepts, crossfit_factors, explain_segments, factor_membership, split_segments
from posterlens.model import cross_validate, load_fold_model, make_folds, tiny_text_model

POOLS = {
'A': ({'dark': ["The scene is dark and shadowy.", "Low-key lighting leaves most of the frame in gloom.",
                "Night-time darkness hangs over everything.", "It feels dim, lit only by a few faint highlights.",
                "Heavy shadows swallow much of the picture."],
       'bright': ["The image is bright and airy.", "High-key lighting floods the frame.", "Everything is sunlit and luminous.",
                  "The exposure is light, with few shadows.", "It glows with daylight brightness."],
       'cool': ["Cool blue and teal hues dominate.", "The palette leans cold, mostly blues and greens.",
                "An icy blue cast colours the scene.", "Its colours are cool, steely and blue."],
       'warm': ["Warm orange and red tones dominate.", "The palette is warm, full of amber and gold.",
                "A fiery golden glow colours the scene.", "Its colours are warm, with reds and yellows."],
       'bw': ["It is black and white.", "The picture is monochrome, with no colour at all.",
              "Rendered in greyscale, it has no hues.", "The photograph is in black-and-white."],
       'cluttered': ["The composition is busy and cluttered.", "Crowded with detail from edge to edge.",
                     "Many elements compete for attention across the frame.", "The layout feels packed and chaotic."],
       'clean': ["The composition is clean and minimal.", "A sparse, uncluttered layout with lots of empty space.",
                 "Simple framing around a single subject.", "The design is minimalist and tidy."],
       'big_title': ["Large bold text dominates the poster.", "A huge title is stamped across the image.",
                     "Big block lettering takes up much of the space.", "The title is set in massive type."],
       'small_text': ["There is only a little small text.", "The lettering is small and discreet.",
                      "Any text is tiny and unobtrusive.", "A modest caption sits in small print."]},
      ["The texture looks slightly grainy.", "It has a cinematic feel.", "The mood is intriguing.",
       "There is a sense of story to it.", "The style feels contemporary.", "Edges look a little soft.",
       "It invites a second look.", "The framing is vertical, as posters are.", "One figure faces the viewer.",
       "Two people stand side by side.", "No faces are visible.", "A car is parked nearby."]),
'B': ({'dark': ["Most of the poster sits in deep shadow.", "A murky, nocturnal atmosphere.", "The lighting is sombre and low.",
                "Blackness surrounds a few pools of light.", "Gloom settles across the whole picture."],
       'bright': ["Light pours over the whole poster.", "A radiant, sun-drenched look.", "Pale, washed-out brightness everywhere.",
                  "The lighting is cheerful and high.", "Shadows are almost absent in this luminous shot."],
       'cool': ["Shades of blue and cyan prevail.", "A chilly, bluish palette.", "Cold greens and blues set the tone.",
                "The colour grading is cool and wintry."],
       'warm': ["Shades of orange and crimson prevail.", "A sunset palette of ambers and reds.", "Hot, golden colours set the tone.",
                "The colour grading is warm and summery."],
       'bw': ["There is no colour: only shades of grey.", "A monochrome, grey-scale treatment.", "Shot entirely without colour.",
              "The poster uses a black and white photograph."],
       'cluttered': ["Dense visual noise fills every corner.", "There is a lot going on, with objects everywhere.",
                     "The arrangement is messy and overloaded.", "A jumble of shapes crowds the poster."],
       'clean': ["Negative space surrounds the subject.", "The arrangement is spare and orderly.",
                 "Little competes with the main figure.", "An understated, open composition."],
       'big_title': ["The name of the film is written in enormous letters.", "Oversized typography shouts the title.",
                     "Giant capitals span the width of the poster.", "Heavy headline type is the first thing you see."],
       'small_text': ["Only fine print appears.", "The typography is restrained and tiny.",
                      "Text is limited to a small credit line.", "Words appear only in a small, quiet font."]},
      ["The poster has a glossy finish.", "It looks like a festival release.", "The atmosphere is hard to place.",
       "A faint vignette frames the edges.", "The image has a nostalgic quality.", "Somebody looks off to the side.",
       "There is a hint of motion blur.", "A road leads into the distance.", "Clouds fill part of the sky.",
       "It would catch the eye in a lobby.", "The grain of film is visible.", "A building stands in the background."]),
    'C': ({'dark': ["Darkness dominates, with only a sliver of light.", "The whole thing is shrouded in shadow.",
                    "It is an underlit, dusky image.", "The mood is noir: black shadows and little light."],
           'bright': ["The scene is bathed in light.", "It is a sunny, well-lit image.", "Everything looks light and fresh.",
                      "Bright daylight washes over the picture."],
           'cool': ["The tones are icy blue.", "Teal and navy make up most of the colours.", "The image has a cold, blue tint.",
                    "Blue-green hues cover most of it."],
           'warm': ["The tones are golden and orange.", "Red and amber make up most of the colours.",
                    "The image has a warm, sunset tint.", "Yellow-orange hues cover most of it."],
           'bw': ["It is a black-and-white image.", "There are no colours, just greys.", "The photo is monochrome.",
                  "Everything is shown in grayscale."],
           'cluttered': ["The frame is packed with objects.", "Lots of things compete for space.",
                         "It is visually noisy and crowded.", "The picture is full of small details everywhere."],
           'clean': ["The frame is mostly empty.", "Only one thing is shown, with space around it.",
                     "It is visually quiet and simple.", "The picture has a clean, spare look."],
           'big_title': ["The title is enormous.", "Big letters spell out the name across the poster.",
                         "A bold headline fills the top.", "Giant type is the main element."],
           'small_text': ["The title is small.", "Little letters sit in a corner.", "Text plays only a minor role.",
                          "The writing is fine and easy to miss."]},
          ["The lines are sharp.", "It feels professional.", "There is some symmetry.", "The photo seems recent.",
           "An animal is in the picture.", "Someone wears a hat.", "The background is blurry.", "It looks like a sequel.",
           "A hand is raised.", "The horizon is tilted.", "It has a retro vibe.", "Water appears somewhere."]),
    'D': ({'dark': ["Shadows eat up most of the poster.", "The lighting is dim and brooding.", "It is a dark, nighttime shot.",
                    "Only a faint glow breaks the gloom."],
           'bright': ["The poster is full of light.", "The lighting is bright and open.", "It is a daytime shot, brightly lit.",
                      "Sunlight reaches every corner."],
           'cool': ["Blue dominates the colour scheme.", "The hues are cold: blues and cyans.", "A blue wash covers the picture.",
                    "Cool, bluish colours throughout."],
           'warm': ["Orange dominates the colour scheme.", "The hues are warm: reds and oranges.", "A golden wash covers the picture.",
                    "Warm, reddish colours throughout."],
           'bw': ["The poster is in black and white.", "It has no colour, only grey tones.", "A colourless, grayscale photograph.",
                  "Monochrome throughout, without any hue."],
           'cluttered': ["Many objects fill the poster.", "The design is crowded and busy.", "There is clutter everywhere.",
                         "Detail upon detail covers the image."],
           'clean': ["The poster shows a single subject.", "The design is clean, with a lot of empty space.", "There is hardly anything else in view.",
                     "A minimal layout leaves room to breathe."],
           'big_title': ["The title is printed very large.", "Huge letters cover a big part of the poster.", "The lettering is massive.",
                         "A dominant title banner stands out."],
           'small_text': ["The title is printed small.", "Only a few small words appear.", "The lettering is tiny.",
                          "Text is barely noticeable."]},
          ["The corners are rounded.", "It has a dreamy feel.", "A tree stands to one side.", "The figure wears a coat.",
           "It looks expensive.", "The edges are sharp.", "A window is visible.", "It feels like an indie film.",
           "The pose is dramatic.", "Smoke drifts across.", "It seems to be evening.", "A shadow falls on the wall."]),
    'E': ({'dark': ["Most of the frame is plunged in darkness.", "The picture is lit very low.", "A dark, shadow-heavy image.",
                    "Murky blackness fills the background."],
           'bright': ["A brightly illuminated scene.", "The picture is lit very high.", "A light, shadowless image.",
                      "Brilliant light fills the background."],
           'cool': ["Steel blue is the main colour.", "The colour temperature is cold.", "Aqua and cobalt tones prevail.",
                    "It is tinted a wintry blue."],
           'warm': ["Rust and gold are the main colours.", "The colour temperature is warm.", "Scarlet and amber tones prevail.",
                    "It is tinted a fiery orange."],
           'bw': ["The image lacks colour entirely.", "Shades of grey only, like an old photo.", "The poster is black-and-white.",
                  "It is printed in monochrome."],
           'cluttered': ["The poster is overloaded with imagery.", "It is a busy collage of elements.", "Objects are piled up across the whole space.",
                         "The scene is dense and hectic."],
           'clean': ["A lone subject against a plain background.", "It is an uncluttered, restrained design.", "Plenty of blank space surrounds the subject.",
                     "The scene is calm and sparse."],
           'big_title': ["The film's name is huge.", "Towering letters form the title.", "A very large title grabs attention.",
                         "The typography is oversized and loud."],
           'small_text': ["The film's name is modest in size.", "Small letters form the title.", "A very small title sits low.",
                          "The typography is subtle and small."]},
          ["The image is slightly out of focus.", "It has an epic scale.", "A bird flies overhead.", "Someone is running.",
           "It looks handmade.", "A mountain rises behind.", "The costume is elaborate.", "It feels mysterious.",
           "Rain is falling.", "A weapon is visible.", "The sky is cloudy.", "It suggests a journey."]),
    'F': ({'dark': ["Darkness dominates, with only faint pools of light.", "Much of the image sinks into deep shadow.",
                    "It is a nocturnal, poorly lit scene.", "The lighting is subdued and sombre.", "Very little light reaches the figures."],
           'bright': ["Sunshine washes over the whole image.", "It is a radiant, well-lit scene.", "Bright daylight makes every detail clear.",
                      "The lighting is cheerful and even.", "Hardly any shadow falls anywhere."],
           'cool': ["Chilly blues and turquoise set the colour scheme.", "The hues are glacial, icy and pale blue.",
                    "A cold, bluish tint runs through the picture.", "Its colour scheme is built on navy and cyan."],
           'warm': ["Blazing oranges and reds set the colour scheme.", "The hues are sunset-like, coppery and hot.",
                    "A warm, reddish tint runs through the picture.", "Its colour scheme is built on crimson and ochre."],
           'bw': ["The whole image is rendered without colour.", "It is a grayscale picture, like vintage newsprint.",
                  "Black, white and silver greys are the only tones.", "The film poster is a monochrome photograph."],
           'cluttered': ["Dozens of characters and props jostle for space.", "The design is crowded, with no breathing room.",
                         "Every corner is crammed with figures and objects.", "It is a chaotic montage of many scenes."],
           'clean': ["A single figure stands alone in generous empty space.", "The design is spare, with lots of breathing room.",
                     "There is almost nothing in the frame besides one person.", "It is an austere, minimalist composition."],
           'big_title': ["The title is printed in enormous block capitals.", "Giant lettering spells out the name across the middle.",
                         "The heading takes up a third of the poster.", "Its name is written in massive, heavy type."],
           'small_text': ["The title is printed in a discreet, small font.", "Only a little lettering appears, in one corner.",
                          "The heading is small and easy to overlook.", "Its name is written in fine, delicate type."]},
          ["A car is parked nearby.", "The characters look tired.", "There is a hint of romance.", "The background shows a city skyline.",
           "A dog sits at someone's feet.", "It suggests an adventure.", "The poster has a glossy finish.", "Two people are arguing.",
           "The clothing looks old-fashioned.", "A river runs through the scene.", "It looks like a sequel.", "Someone holds a letter."]),
}
SIDES = {'dark': ('dark', 1), 'bright': ('dark', -1), 'cool': ('cool', 1), 'warm': ('cool', -1), 'bw': ('bw', 1),
         'cluttered': ('cluttered', 1), 'clean': ('cluttered', -1), 'big_title': ('big_title', 1), 'small_text': ('big_title', -1)}
COEF = {e['attribute']: e['coef'] for e in EFFECTS}
CONCEPT_KW = {}   # settings of crossfit_concepts beyond its defaults (none: the shipped method)
KIND_LABELS = {'concepts': 'concepts', 'sides': 'concepts, sides only', 'ngrams': 'word n-grams'}
SIDE_OF = {t: s for pool, _ in POOLS.values() for s, ws in pool.items() for t in ws}


def write_captions(t:pd.DataFrame, pool:str, rng:np.random.Generator, unsaid:float=0.15) -> list[str]:
    "One free-form caption per row of the synthetic table: each attribute's side in a random wording (or unsaid), filler, shuffled."
    words, filler = POOLS[pool]
    caps = []
    for r in t.itertuples():
        sides = ['dark' if r.dark else 'bright', 'bw' if r.bw else 'cool' if r.cool else 'warm',
                 'cluttered' if r.cluttered else 'clean', 'big_title' if r.big_title else 'small_text']
        parts = [str(rng.choice(words[s])) for s in sides if rng.random() >= unsaid]
        parts += [str(x) for x in rng.choice(filler, size=rng.integers(1, 4), replace=False)]
        caps.append(' '.join(rng.permutation(parts)))
    return caps


def explained_run(seed:int, pool:str, shuffled:bool, n:int, cfg, cache:Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    "(segment values of every caption by the fold model that did not train on it, the rows, the model's metrics), cached."
    d = cache/f"{pool}-n{n}-seed{seed}{'-shuffled' if shuffled else ''}"
    if (d/'seg.parquet').exists() and (d/'rows.parquet').exists() and (d/'metrics.json').exists():
        return read_parquet(d/'seg.parquet'), read_parquet(d/'rows.parquet'), read_json(d/'metrics.json')
    t = synth_table(n, seed)
    t['caption'] = write_captions(t, pool, np.random.default_rng([seed, 7]))
    if shuffled: t['target'] = np.random.default_rng([seed, 9]).permutation(t.target.to_numpy())
    df = t[['id', 'caption', 'target']].copy()
    metrics, _ = cross_validate(df, cfg, d/'model', progress=False)
    held = np.full(n, -1)
    for k, (_, va) in enumerate(make_folds(n, cfg.folds, cfg.seed)): held[va] = k
    seg = pd.concat([explain_segments(load_fold_model(d/'model', k), df.caption.iloc[held == k].tolist(),
                                      ids=df.id.iloc[held == k].tolist(), progress=False).assign(fold=k)
                     for k in range(cfg.folds)], ignore_index=True)
    rows = t.assign(heldout=held)
    write_parquet(seg, d/'seg.parquet'); write_parquet(rows, d/'rows.parquet')
    write_json({'beats_mean': metrics.get('beats_mean'), 'model': metrics['model'], 'mean': metrics['mean']}, d/'metrics.json')
    return seg, rows, read_json(d/'metrics.json')


def judge(members:list[tuple[str, int, int]], effect:float) -> tuple[str|None, int, bool]:
    "(the attribute most of a flagged factor's carriers speak of, or None for filler; the side; whether the effect has the planted sign)."
    votes = {}
    for text, s, w in members:       # a segment, its side of the factor (+1, or -1 for a versus), how many captions say it
        side = SIDE_OF.get(text)
        key = None if side is None else (SIDES[side][0], SIDES[side][1]*s)
        votes[key] = votes.get(key, 0) + w
    best = max(votes, key=votes.get) if votes else None
    if best is None or 2*votes[best] <= sum(votes.values()): return None, 0, False
    a, side = best
    return a, side, bool(np.sign(COEF[a])*side == np.sign(effect))


def score(flagged:list[tuple[list, float, str|None]]) -> dict:
    "Recovered attributes, unplanted flagged, flagged per attribute and name fidelity of flagged factors (members, effect, name)."
    per, ok, unplanted, named = {a: 0 for a in COEF}, {a: False for a in COEF}, 0, []
    for members, effect, name in flagged:
        a, side, right = judge(members, effect)
        if a is None: unplanted += 1; continue
        per[a] += 1; ok[a] |= right
        if name is not None:
            s = SIDE_OF.get(name)
            named.append(s is not None and SIDES[s] == (a, side))
    return {'recovered': sum(ok.values()), 'all_recovered': all(ok.values()), 'unplanted': unplanted,
            'max_per_attribute': max(per.values()), 'per_attribute': per,
            'name_fidelity': float(np.mean(named)) if named else None}


def concept_flags(seg, rows, beats_mean, **kw) -> tuple[list, pd.DataFrame]:
    f, _, _ = crossfit_concepts(seg, rows[['id', 'caption', 'target', 'heldout']], beats_mean=beats_mean, **{**CONCEPT_KW, **kw})
    return [([(t, 1, int(w)) for t, w in zip(r.sentences, r.sentence_counts)], r.effect, r.name) for r in f[f.significant].itertuples()], f


def sides_flags(seg, rows, beats_mean) -> tuple[list, pd.DataFrame]:
    return concept_flags(seg, rows, beats_mean, levels=1)


def ngram_flags(seg, rows, beats_mean) -> tuple[list, pd.DataFrame]:
    f, _, _ = crossfit_factors(seg, rows[['id', 'caption', 'target', 'heldout']], beats_mean=beats_mean)
    texts = [s for c in rows.caption for s in split_segments(c, 8, 'sentence')]
    out = []
    for r in f[f.significant].itertuples():
        m = factor_membership(texts, pd.DataFrame({'factor': ['x', 'v'], 'phrases': [list(r.phrases), list(r.versus_phrases)]}))
        out.append(([(texts[i], 1 if fa == 'x' else -1, 1) for i, fa in zip(m.row, m.factor)], r.effect, None))   # every segment using it
    return out, f


KINDS = {'concepts': concept_flags, 'sides': sides_flags, 'ngrams': ngram_flags}


def summarise(rows:list[dict], what:str) -> dict:
    d = pd.DataFrame(rows)
    if not len(d): return {'runs': 0}
    return {'runs': len(d), 'seeds_at_most_2_per_attribute': int((d.max_per_attribute <= 2).sum()), 'all_recovered_seeds': int(d.all_recovered.sum()), 'recovered_mean': float(d.recovered.mean()),
            'unplanted_per_seed': float(d.unplanted.mean()), 'max_per_attribute': int(d.max_per_attribute.max()),
            'flagged_per_attribute_mean': float(np.mean([np.mean([v for v in p.values() if v] or [0]) for p in d.per_attribute])),
            'name_fidelity': None if what == 'ngrams' or d.name_fidelity.isna().all() else float(d.name_fidelity.mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', type=int, default=10); ap.add_argument('--n', type=int, default=400)
    ap.add_argument('--pools', nargs='+', default=list(POOLS)); ap.add_argument('--shuffled', type=int, default=10)
    ap.add_argument('--cached', action='store_true', help='only the runs already in the cache (evaluate, compute nothing)')
    ap.add_argument('--smoke', action='store_true', help='tiny sizes (1 seed, 60 captions, 2 folds, 1 epoch, a tiny random text model)')
    a = ap.parse_args(argv)
    cfg = load_settings('default')
    if a.smoke:
        a.seeds, a.n, a.pools, a.shuffled, cfg.epochs, cfg.folds = 1, 60, ['A'], 1, 1, 2
        cfg.text_model, cfg.freeze_layers = tiny_text_model(Path(tempfile.mkdtemp(prefix='paraphrase-tiny-'))/'tiny'), 0
    cache = Path(tempfile.mkdtemp(prefix='paraphrase-smoke-')) if a.smoke else ROOT/'.cache'/'bench-paraphrase'
    t0, runs = time.time(), []
    plan = [(s, p, False) for p in a.pools for s in range(a.seeds)] + [(s, 'A', True) for s in range(a.shuffled)]
    for seed, pool, shuffled in plan:
        if a.cached and not (cache/f"{pool}-n{a.n}-seed{seed}{'-shuffled' if shuffled else ''}"/'metrics.json').exists(): continue
        seg, rows, m = explained_run(seed, pool, shuffled, a.n, cfg, cache)
        for kind, flags in KINDS.items():
            raw, f = flags(seg, rows, True)                          # the held-out tests alone; the gate only clears the flags
            fl = raw if m['beats_mean'] is True else []
            r = {'seed': seed, 'pool': pool, 'shuffled': shuffled, 'kind': kind, 'beats_mean': m['beats_mean'],
                 'tested': len(f), 'flagged': len(fl), 'flagged_ungated': len(raw), **score(fl)}
            runs.append(r)
            print(f"seed {seed} pool {pool}{' shuffled' if shuffled else ''} {kind:8s}: model {m['model']['rmse']:.3f} vs mean "
                  f"{m['mean']['rmse']:.3f}; {len(f)} tested, {len(fl)} flagged ({len(raw)} without the gate); recovered "
                  f"{r['recovered']}/5, unplanted {r['unplanted']}, most per attribute {r['max_per_attribute']}", flush=True)
    d = pd.DataFrame(runs)
    figures = {'procedure': __doc__.split('\n\n', 2)[2].split('Each run')[0].strip(), 'n': a.n, 'seeds': a.seeds, 'runs': runs}
    table = []
    for pool in a.pools:
        for kind in KINDS:
            g = d[(d.pool == pool) & (d.kind == kind) & ~d.shuffled]
            s = figures[f'{pool}_{kind}'] = summarise(g.to_dict('records'), kind)
            if not s['runs']: continue
            print(f"pool {pool}, {kind}: all 5 planted flagged with the planted sign in {s['all_recovered_seeds']} of {s['runs']} "
                  f"seeds (target >= 9 of 10); unplanted flagged per seed {s['unplanted_per_seed']:.2f} (target <= 0.2); most "
                  f"flagged per attribute {s['max_per_attribute']} (target <= 2)" +
                  (f"; name fidelity {s['name_fidelity']:.2f}" if s['name_fidelity'] is not None else ''))
            if kind == 'concepts':
                table += [(f'pool {pool}, concepts: seeds with all 5 planted attributes flagged with their sign (target 9 of 10)',
                           f"{s['all_recovered_seeds']} of {s['runs']}"),
                          (f'pool {pool}, concepts: unplanted (filler) flagged per seed (target <= 0.2)', f"{s['unplanted_per_seed']:.2f}"),
                          (f'pool {pool}, concepts: seeds with at most 2 flagged per attribute', f"{s['seeds_at_most_2_per_attribute']} of {s['runs']}")]
            else:
                table += [(f'pool {pool}, {KIND_LABELS[kind]}: seeds with all 5 flagged; unplanted per seed; seeds with at most 2 per attribute',
                           f"{s['all_recovered_seeds']} of {s['runs']}; {s['unplanted_per_seed']:.2f}; {s['seeds_at_most_2_per_attribute']} of {s['runs']}")]
    for kind in KINDS:
        g = d[d.shuffled & (d.kind == kind)]
        if len(g):
            figures[f'shuffled_{kind}'] = {'runs': len(g), 'nothing_flagged': int((g.flagged == 0).sum()),
                                           'nothing_flagged_ungated': int((g.flagged_ungated == 0).sum())}
            table.append((f'shuffled outcomes, {kind}: seeds with nothing flagged (without the beats-the-mean gate)',
                          f"{int((g.flagged == 0).sum())} of {len(g)} ({int((g.flagged_ungated == 0).sum())})"))
            print(f"shuffled outcomes, {kind}: nothing flagged in {int((g.flagged == 0).sum())} of {len(g)} seeds "
                  f"({int((g.flagged_ungated == 0).sum())} without the beats-the-mean gate)")
    write_result('paraphrase', figures, table, smoke=a.smoke)
    return 0


if __name__ == '__main__': sys.exit(main())
