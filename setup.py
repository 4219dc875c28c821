"""ament_python package definition of xsquare_logger.

Works both for colcon (ament_python build type, scripts land in lib/xsquare_logger so
`ros2 run` and launch_ros find them, see setup.cfg) and for pip
(`pip install -e .`, scripts land in <venv>/bin).
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "xsquare_logger"


def _files(pattern: str) -> list[str]:
    return sorted(p for p in glob(pattern) if not p.endswith("~"))


setup(
    name=package_name,
    version="0.1.0",
    description="ROS 2 recorder for humanoid robots writing MCAP/rosbag2 sessions",
    license="Apache-2.0",
    maintainer="xsquare developers",
    maintainer_email="dev@xsquare.example",
    python_requires=">=3.10",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    package_data={
        package_name: ["py.typed", "**/*.yaml", "**/*.json", "**/*.html", "**/*.js", "**/*.css"]
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", _files("launch/*.launch.py")),
        (f"share/{package_name}/config", _files("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    # H.264 camera compression (libx264 inside PyAV is GPL: opt in).
    extras_require={"h264": ["av==18.1.0"]},
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "xsq = xsquare_logger.cli.main:main",
            "xsq-tablet = xsquare_logger.cli.tablet:main",
            "xsq-recorder = xsquare_logger.cli.main:recorder_main",
            "xsq-sim = xsquare_logger.cli.main:sim_main",
        ],
    },
)
