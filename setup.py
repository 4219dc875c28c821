"""ament_python package definition of xsquare_logger.

Works both for colcon (ament_python build type, scripts land in lib/xsquare_logger so
`ros2 run` and launch_ros find them, see setup.cfg) and for pip
(`pip install .`, scripts land in <venv>/bin).

INSTALL_REQUIRES and EXTRAS_REQUIRE are the one list of runtime dependencies: the
Dockerfile and the colcon instructions pip-install this project to get them,
requirements.txt refers to it (`-e .[...]`), constraints.txt pins them, and
test/test_dependencies.py checks them against the imports of xsquare_logger/.
Lower bounds are the versions tested (constraints.txt holds the exact pins), lower only
where the Docker image must keep Ubuntu 24.04's numpy/PyYAML (the ROS apt packages use
them) and so an opencv built for numpy 1.x (docker/image_constraints.py).
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "xsquare_logger"


# Every runtime dependency, with why (test/test_dependencies.py reads these two lists
# with ast and checks them against the imports of xsquare_logger/).
INSTALL_REQUIRES = [
    "pydantic>=2.14,<3",  # config/ models
    "PyYAML>=6.0.1",  # config files, metadata.yaml (6.0.1: Ubuntu 24.04's python3-yaml)
    # numpy 1.26 is Ubuntu 24.04's: the ROS apt packages are built against it and break
    # under numpy 2, so the Docker image keeps it (docker/image_constraints.py).
    "numpy>=1.26",
    "mcap>=1.6,<2",  # MCAP reading (info, clip, report, recovery)
    "zstandard>=0.25",  # MCAP chunk compression
    "lz4>=4.4",  # MCAP chunk compression
    "zlib-ng>=1.0",  # chunk CRC32 at ~10 GB/s (zlib's: 2): the recorder's I/O thread (issue 12)
    "rich>=15",  # xsq upload progress
    "pyzmq>=27",  # tablet link (ZeroMQ + CURVE)
    # JPEG cameras (config/robot.yaml). 5.x needs numpy>=2; 4.11 is the image's.
    "opencv-python-headless>=4.11",
    "botocore>=1.44",  # s3:// upload backend (botocore only: no boto3 needed)
    "matplotlib>=3.11",  # xsq report plots
    "foxglove-sdk>=0.30,<0.31",  # live view (pre-1.0 API: pinned to the minor we use)
]

EXTRAS_REQUIRE = {
    # H.264 camera compression: libx264 inside PyAV is GPL, so it is opt-in.
    "h264": ["av>=18.1"],
    # xsq export lerobot: parquet (pyarrow) and MP4 remux/encode (PyAV; libx264 is GPL).
    "export": ["pyarrow>=26", "av>=18.1"],
    # xsq export lerobot --ray ADDRESS: episodes as Ray tasks (~80 MB wheel, 240 MB installed).
    "ray": ["ray>=2.60,<3"],
    # ROS 2 Kilted from the PyPI "ros-*" wheels, for machines without a ROS install
    # (make setup, CI). With a ROS distro these come from apt (package.xml exec_depend);
    # never install this extra there (the Docker image does not).
    "ros-wheels": [
        "ros-rclpy[fastrtps]>=9.1,<10",
        "ros-std-msgs>=5.5,<6",
        "ros-sensor-msgs>=5.5,<6",
        "ros-geometry-msgs>=5.5,<6",
        "ros-builtin-interfaces>=2.3,<3",
    ],
    # The floor service (xsq floor ...): HTTP API, catalog database and its migrations.
    # Robots never need it (floor/protocol.py and the reporter are pydantic-only).
    "floor": [
        "fastapi>=0.165,<1",  # floor/api.py
        "uvicorn>=0.55",  # xsq floor serve
        "sqlalchemy>=2.1,<3",  # floor/catalog
        "alembic>=1.20,<2",  # floor/catalog/migrations
        "psycopg[binary]>=3.3,<4",  # postgresql:// catalogs (loaded by SQLAlchemy)
    ],
}


def _files(pattern: str) -> list[str]:
    return sorted(p for p in glob(pattern) if not p.endswith("~"))


setup(
    name=package_name,
    version="0.1.0",
    description="ROS 2 recorder for humanoid robots writing MCAP/rosbag2 sessions",
    license="Apache-2.0",
    maintainer="xsquare developers",
    maintainer_email="dev@xsquare.example",
    python_requires=">=3.11",  # datetime.UTC, enum.StrEnum
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    package_data={
        package_name: [
            "py.typed", "**/*.yaml", "**/*.json", "**/*.html", "**/*.js", "**/*.css",
            # Alembic migrations are not a package: ship them as data (xsq floor serve
            # upgrades the catalog from them at start).
            "floor/catalog/migrations/*.py", "floor/catalog/migrations/*.mako",
            "floor/catalog/migrations/versions/*.py",
        ]
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", _files("launch/*.launch.py")),
        (f"share/{package_name}/config", _files("config/*.yaml")),
        (f"share/{package_name}/config/export", _files("config/export/*.yaml")),
    ],
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "xsq = xsquare_logger.cli.main:main",
            "xsq-tablet = xsquare_logger.cli.tablet:main",
            "xsq-recorder = xsquare_logger.cli.main:recorder_main",
            "xsq-sim = xsquare_logger.cli.main:sim_main",
            "xsq-recorder-node = xsquare_logger.cli.main:recorder_node_main",
            "xsq-bridge = xsquare_logger.cli.main:bridge_main",
            "xsq-uploader-node = xsquare_logger.cli.main:uploader_node_main",
        ],
    },
)
