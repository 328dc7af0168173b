"""Pictures of the twin for the docs: for every task, a frame from each camera (front and wrist) of each
robot at the moment the scripted expert succeeds, and the tactile images of both fingers while the
touch-guided expert holds the fragile cube.

    python -m twinloop.sim.pictures docs/images
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from twinloop.sim.experts import get_expert, run_episode
from twinloop.sim.robots import robot_names
from twinloop.sim.scene import front_camera, wrist_camera
from twinloop.sim.tasks import task_names
from twinloop.sim.twin import Twin, TwinConfig

CAMERAS = ("front", "wrist")
ROBOTS = ("so101", "panda")  # the default robot first


def expert_frames(robot: str, task: str, seed: int) -> tuple[dict[str, np.ndarray], bool, Twin]:
    """Every camera's frame at the end of one expert episode (it stops at success); the twin stays open."""
    cameras = (front_camera(robot, width=320, height=240), wrist_camera(robot, width=320, height=240))
    twin = Twin(TwinConfig(robot=robot, task=task, cameras=cameras))
    result = run_episode(twin, get_expert(task, twin.robot, np.random.default_rng(seed)), seed)
    return {name: twin.render(name) for name in CAMERAS}, result.success, twin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="output folder for the PNG files")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    assert set(ROBOTS) == set(robot_names()), "a new robot needs a row in the pictures"

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    for task in task_names():
        fig, axes = plt.subplots(len(ROBOTS), len(CAMERAS), figsize=(3.2 * len(CAMERAS), 2.5 * len(ROBOTS)))
        for row, robot in enumerate(ROBOTS):
            frames, success, twin = expert_frames(robot, task, args.seed)
            for col, name in enumerate(CAMERAS):
                axes[row, col].imshow(frames[name])
                axes[row, col].set_title(f"{robot} {name}", fontsize=9)
                axes[row, col].axis("off")
            print(f"{task} {robot}: {twin.task.instruction} (expert {'succeeded' if success else 'failed'})")
            if task == "pick_fragile_cube":
                _tactile_figure(plt, twin, args.out / f"twin_tactile_{robot}.png")
            twin.close()
        fig.suptitle(f"{task}: {twin.task.instruction} (seed {args.seed}, expert at success)", fontsize=10)
        fig.tight_layout()
        path = args.out / f"twin_{task}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        print(f"  -> {path}")
    return 0


def _tactile_figure(plt, twin: Twin, path: Path) -> None:
    fig, axes = plt.subplots(1, len(twin.tactile_names), figsize=(2.2 * len(twin.tactile_names), 3))
    for ax, name in zip(axes, twin.tactile_names, strict=True):
        image = twin.tactile(name) * 1e3
        shown = ax.imshow(image, cmap="viridis", vmin=0.0, vmax=max(1e-3, float(image.max())))
        ax.set_title(f"{name}\n(mm)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.05)
    force = twin.task.peak_force
    fig.suptitle(f"{twin.robot.name}: taxels holding the fragile cube (peak {force:.1f} N)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"  -> {path}: max taxel {max(twin.tactile(n).max() for n in twin.tactile_names) * 1e3:.2f} mm")


if __name__ == "__main__":
    raise SystemExit(main())
