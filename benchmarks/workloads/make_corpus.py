#!/usr/bin/env python3
"""Writes corpus.txt: plain English prose for synthetic benchmark prompts.

The text is generated from a small template grammar written for this repository (no third-party
text), so it can be shipped freely. It is varied enough at the word and sentence level that a
BPE tokenizer sees realistic English token statistics (about 4 characters per token), which is
all the benchmark needs: prompts of a requested token length, cut with the server's /tokenize.

Deterministic: `python3 make_corpus.py` always writes the same file.
"""
import random
import sys

TOPICS = {
    "the harbor": ["fishing boats", "the lighthouse keeper", "a cargo ship", "the tide", "gulls",
                   "the old pier", "a rope maker", "the customs office", "the evening ferry"],
    "the village": ["the baker", "the school teacher", "a stone bridge", "the market square",
                    "the clock tower", "an orchard", "the miller", "the parish records"],
    "the laboratory": ["a careful chemist", "the microscope", "a sealed sample", "the notebook",
                       "a cooling fan", "the spectrometer", "an apprentice", "the night shift"],
    "the mountains": ["a shepherd", "the glacier", "a narrow pass", "the weather station",
                      "a mountain hut", "the snow line", "a pair of hikers", "the summit cairn"],
    "the library": ["the archivist", "a torn atlas", "the reading room", "a catalogue card",
                    "the rare books", "a quiet student", "the bookbinder", "the oak shelves"],
    "the railway": ["the signal box", "a night train", "the stationmaster", "the timetable",
                    "a freight wagon", "the level crossing", "the engine driver", "a ticket clerk"],
    "the garden": ["the gardener", "a row of beans", "the greenhouse", "a wheelbarrow",
                   "the compost heap", "an apple tree", "the rain barrel", "a flock of sparrows"],
    "the city": ["a tram line", "the night market", "a street musician", "the city council",
                 "an office tower", "the river embankment", "a bicycle courier", "the museum"],
    "the kitchen": ["a copper pot", "the head cook", "a loaf of rye bread", "the spice shelf",
                    "a simmering stock", "the oven", "a basket of onions", "the dish washer"],
    "the observatory": ["the telescope", "a comet", "the astronomer", "the star charts",
                        "a clear night", "the dome", "a faint galaxy", "the logbook"],
}
VERBS_T = ["noticed", "repaired", "described", "measured", "ignored", "admired", "carried",
           "questioned", "followed", "painted", "counted", "remembered", "explained", "watched",
           "visited", "recorded", "cleaned", "studied", "borrowed", "returned", "inspected"]
VERBS_I = ["waited", "hesitated", "laughed", "listened", "worked late", "returned home",
           "wandered off", "fell silent", "kept going", "changed course", "took notes"]
ADVERBS = ["slowly", "carefully", "quietly", "at once", "without a word", "again and again",
           "with some difficulty", "in the morning", "before dawn", "after the storm",
           "for the first time", "once more", "reluctantly", "happily", "in a hurry"]
ADJS = ["small", "old", "bright", "narrow", "heavy", "patient", "curious", "faded", "steady",
        "distant", "crowded", "ordinary", "remarkable", "quiet", "broken", "careful", "cold",
        "warm", "forgotten", "familiar", "strange", "gentle", "stubborn", "tired", "clever"]
CONNECT = ["Meanwhile,", "Later,", "Even so,", "By noon,", "In the end,", "At first,",
           "For a while,", "Afterwards,", "Still,", "Of course,", "That year,", "Sometimes,"]
REASONS = ["because the light was fading", "since nobody else would do it",
           "although the work was slow", "because the rules had changed",
           "while the others were asleep", "as if it were the most natural thing",
           "so that nothing would be lost", "even though it was raining",
           "because a letter had arrived", "before anyone could object"]
NUMBERS = ["two", "three", "four", "seven", "twelve", "forty", "a hundred", "several", "a dozen"]
UNITS = ["days", "weeks", "hours", "miles", "pages", "steps", "years", "minutes"]
QUESTIONS = ["What would happen if {x} {v} {y}?", "Why had {x} never {v} {y} before?",
             "Who else had {v} {y}?", "How long would it take before {x} {v} {y}?"]


def cap(s):
    return s[0].upper() + s[1:]


def np(r, nouns):
    n = r.choice(nouns)
    if r.random() < 0.35:
        art, rest = (n.split(" ", 1) + [""])[:2]
        if art in ("a", "an", "the") and rest:
            adj = r.choice(ADJS)
            art = "an" if art in ("a", "an") and adj[0] in "aeiou" else ("a" if art == "an" else art)
            return "%s %s %s" % (art, adj, rest)
    return n


def sentence(r, place, nouns):
    k = r.random()
    x, y = np(r, nouns), np(r, nouns)
    if k < 0.25:
        return "%s %s %s %s." % (cap(x), r.choice(VERBS_T), y, r.choice(ADVERBS))
    if k < 0.40:
        return "%s %s %s %s, %s." % (r.choice(CONNECT), x, r.choice(VERBS_T), y, r.choice(REASONS))
    if k < 0.52:
        return "In %s, %s %s %s." % (place, x, r.choice(VERBS_I), r.choice(ADVERBS))
    if k < 0.62:
        return "For %s %s, %s %s, and %s %s." % (r.choice(NUMBERS), r.choice(UNITS), x,
                                                  r.choice(VERBS_I), y, r.choice(VERBS_I))
    if k < 0.70:
        return r.choice(QUESTIONS).format(x=x, v=r.choice(VERBS_T), y=y)
    if k < 0.80:
        return "It was said in %s that %s had %s %s %s." % (place, x, r.choice(VERBS_T), y,
                                                          r.choice(ADVERBS))
    if k < 0.90:
        return "%s was %s, and %s seemed %s." % (cap(x), r.choice(ADJS), y, r.choice(ADJS))
    return "Nobody in %s forgot the day %s %s %s." % (place, x, r.choice(VERBS_T), y)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "corpus.txt"
    target_bytes = int(sys.argv[2]) if len(sys.argv) > 2 else 320_000
    r = random.Random(20240501)
    places = sorted(TOPICS)
    parts, size = [], 0
    while size < target_bytes:
        place = r.choice(places)
        nouns = TOPICS[place] + TOPICS[r.choice(places)][:3]
        para = " ".join(sentence(r, place, nouns) for _ in range(r.randint(4, 9)))
        parts.append(para)
        size += len(para) + 2
    with open(out, "w") as f:
        f.write("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
