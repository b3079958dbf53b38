#!/usr/bin/env python3
"""Turns a terminal capture with colours (`tmux capture-pane -e -p`) into an SVG picture.

    python3 docs/ansi-to-svg.py < target/tmp/deck-screen.ans > /tmp/deck.svg
    chromium --headless --no-sandbox --hide-scrollbars --window-size=1360,832 \
        --screenshot=docs/deck.png file:///tmp/deck.svg

Used for the README's deck screenshots: the tmux test (`cargo test --test it deck::`) saves its
captures as `target/tmp/deck-screen.ans` and `target/tmp/deck-shared.ans`. Handles SGR colours
(16, 256, RGB), bold and reverse.
"""
import html
import re
import sys

PALETTE = ["#1e1e1e", "#e06c75", "#98c379", "#e5c07b", "#61afef", "#c678dd", "#56b6c2", "#d7dae0",
           "#5c6370", "#ff7b86", "#b5e890", "#ffd68a", "#82c4ff", "#de9bf0", "#7fd8e3", "#ffffff"]
FG, BG = "#d7dae0", "#1e1e1e"
CELL_W, CELL_H, FONT = 8.4, 17, 14


def color256(n):
    if n < 16:
        return PALETTE[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return "#%02x%02x%02x" % (steps[n // 36], steps[n // 6 % 6], steps[n % 6])
    v = 8 + (n - 232) * 10
    return "#%02x%02x%02x" % (v, v, v)


def apply(params, state):
    codes = [int(p) if p else 0 for p in params.split(";")] if params else [0]
    i = 0
    while i < len(codes):
        c = codes[i]
        if c == 0:
            state.update(fg=None, bg=None, bold=False, reverse=False)
        elif c == 1:
            state["bold"] = True
        elif c == 22:
            state["bold"] = False
        elif c == 7:
            state["reverse"] = True
        elif c == 27:
            state["reverse"] = False
        elif 30 <= c <= 37:
            state["fg"] = PALETTE[c - 30]
        elif 90 <= c <= 97:
            state["fg"] = PALETTE[c - 90 + 8]
        elif 40 <= c <= 47:
            state["bg"] = PALETTE[c - 40]
        elif 100 <= c <= 107:
            state["bg"] = PALETTE[c - 100 + 8]
        elif c == 39:
            state["fg"] = None
        elif c == 49:
            state["bg"] = None
        elif c in (38, 48) and i + 1 < len(codes):
            key = "fg" if c == 38 else "bg"
            if codes[i + 1] == 5 and i + 2 < len(codes):
                state[key] = color256(codes[i + 2])
                i += 2
            elif codes[i + 1] == 2 and i + 4 < len(codes):
                state[key] = "#%02x%02x%02x" % tuple(codes[i + 2:i + 5])
                i += 4
        i += 1


def main():
    lines = sys.stdin.read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    state = dict(fg=None, bg=None, bold=False, reverse=False)
    rects, texts, width = [], [], 0
    for y, line in enumerate(lines):
        x = 0
        for part in re.split(r"(\x1b\[[0-9;]*m)", line):
            m = re.fullmatch(r"\x1b\[([0-9;]*)m", part)
            if m:
                apply(m.group(1), state)
                continue
            if not part:
                continue
            fg, bg = state["fg"] or FG, state["bg"]
            if state["reverse"]:
                fg, bg = bg or BG, fg
            if bg:
                rects.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>'
                              % (x * CELL_W, y * CELL_H, len(part) * CELL_W, CELL_H, bg))
            if part.strip():
                weight = ' font-weight="bold"' if state["bold"] else ""
                texts.append('<text x="%.1f" y="%d" fill="%s"%s textLength="%.1f">%s</text>'
                             % (x * CELL_W, y * CELL_H + 13, fg, weight, len(part) * CELL_W,
                                html.escape(part).replace(" ", "&#160;")))
            x += len(part)
        width = max(width, x)
    w, h = width * CELL_W + 16, len(lines) * CELL_H + 16
    print('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">' % (w, h, w, h))
    print('<rect width="100%%" height="100%%" rx="6" fill="%s"/>' % BG)
    print('<g transform="translate(8 8)" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="%d" xml:space="preserve">' % FONT)
    print("\n".join(rects))
    print("\n".join(texts))
    print("</g></svg>")


if __name__ == "__main__":
    main()
