#!/usr/bin/env bash
# Regenerate the README's story preview from whatever model is bundled in phenaki_core/weights/.
# Re-run it whenever the bundled weights change, then commit docs/images/.
#
#   scripts/make_readme_preview.sh                 # the bundled model
#   scripts/make_readme_preview.sh --checkpoint X  # any bundle (extra args go to `phenaki generate`)
#
# It renders the story workflow (api_workflows/phenaki_story.api.json: the same prompts, seed, frames,
# prime and sampling settings as its Phenaki Chain Scenes node) with `phenaki generate`, then writes
#   docs/images/story.webp         the story, animated, 4x nearest-neighbour, the scene's prompt under it
#   docs/images/story_frames.png   a still: one row per scene, every other frame of it
# Both stay well under 300 KB. Runs on the CPU in well under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python}
WORKFLOW=api_workflows/phenaki_story.api.json
OUT=docs/images
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The story node's settings, as `phenaki generate` arguments (NUL-separated: prompts may hold spaces).
"$PY" - "$WORKFLOW" > "$TMP/args" <<'EOF'
import json, sys
node = next(e["inputs"] for e in json.load(open(sys.argv[1])).values() if e["class_type"] == "PhenakiChainScenes")
args = [line.strip() for line in node["prompts"].splitlines() if line.strip()]
args += ["--seed", node["seed"], "--frames", node["frames_per_scene"], "--prime-frames", node["prime_frames"],
         "--steps", node["steps"], "--cond-scale", node["cond_scale"], "--temperature", node["temperature"]]
assert node.get("critic_noise", 1.0) == 1.0, "phenaki generate samples with critic noise 1.0 only"
if "remask" in node:  # absent in graphs saved before it existed: the default, as in the node
    args += ["--remask", node["remask"]]
if node.get("negative_prompt", "").strip():
    args += ["--negative", node["negative_prompt"]]
sys.stdout.write("\0".join(map(str, args)))
EOF
mapfile -d '' ARGS < "$TMP/args"

t0=$SECONDS
"$PY" -m phenaki_core.cli generate "${ARGS[@]}" "$@" -o "$TMP/frames"  # a directory: one PNG per frame
echo "generated in $((SECONDS - t0)) s"

"$PY" - "$TMP/frames" "$OUT" "$TMP/args" <<'EOF'
import sys
from pathlib import Path
from PIL import Image, ImageDraw

frames_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
args = open(sys.argv[3]).read().split("\0")
prompts = args[:args.index("--seed")]
frames_per_scene = int(args[args.index("--frames") + 1])
prime = int(args[args.index("--prime-frames") + 1])
fps = 8
frames = [Image.open(p).convert("RGB") for p in sorted(frames_dir.glob("*.png"))]
starts = [0] + [frames_per_scene + i * (frames_per_scene - prime) for i in range(len(prompts) - 1)]
assert len(frames) == starts[-1] + frames_per_scene - (prime if len(prompts) > 1 else 0), (len(frames), starts)
scene_of = [max(i for i, s in enumerate(starts) if s <= f) for f in range(len(frames))]

scale, caption = 4, 22
size = frames[0].width * scale
animated = []
for f, frame in enumerate(frames):
    canvas = Image.new("RGB", (size, size + caption), (24, 24, 24))
    canvas.paste(frame.resize((size, size), Image.NEAREST), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, size + 5), f"{scene_of[f] + 1}/{len(prompts)}: {prompts[scene_of[f]]}", fill=(230, 230, 230))
    animated.append(canvas)
animated[0].save(out / "story.webp", save_all=True, append_images=animated[1:], duration=round(1000 / fps),
                 loop=0, quality=90, method=6)  # lossy: ~70 KB instead of ~300 KB lossless

# The still: one row per scene, every other frame of that scene's new frames, the prompt on the left.
cell, label, gap = frames[0].width * 2, 200, 4
rows = [[f for f in range(len(frames)) if scene_of[f] == s][::2] for s in range(len(prompts))]
width = label + max(map(len, rows)) * (cell + gap)
sheet = Image.new("RGB", (width, len(rows) * (cell + gap) + gap), (24, 24, 24))
draw = ImageDraw.Draw(sheet)
for r, row in enumerate(rows):
    y = gap + r * (cell + gap)
    draw.text((6, y + cell // 2 - 6), f"{r + 1}: {prompts[r]}", fill=(230, 230, 230))
    for c, f in enumerate(row):
        sheet.paste(frames[f].resize((cell, cell), Image.NEAREST), (label + c * (cell + gap), y))
sheet.save(out / "story_frames.png", optimize=True)
for name in ("story.webp", "story_frames.png"):
    print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KB)")
EOF
