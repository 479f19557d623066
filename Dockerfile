# zoocodec GPU worker image: CUDA runtime, Python, zoocodec with the gpu, video and ray
# extras and the bundled zoo models. Used by ray_config.yaml for every node type.
#   docker build -t zoocodec-gpu:0.1.0 .
# NVDEC/NVENC need the driver's video capability inside the container, hence
# NVIDIA_DRIVER_CAPABILITIES includes `video` (the NVIDIA container runtime mounts
# libnvcuvid / libnvidia-encode only then).
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    RAY_AUTH_MODE=token

# Python, a C++ compiler and CMake (the install builds the native engine), what the Ray
# cluster launcher runs inside the container (ssh, rsync), and the labelled evaluation
# data (digits and photos, Fashion-MNIST) and the calibration photos (two wallpaper packages).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ cmake \
      openssh-client rsync opencv-doc dataset-fashion-mnist lomiri-wallpapers-16.04 mate-backgrounds \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/zoocodec
COPY . /opt/zoocodec
# torch is pinned (2.13.0) and only reads weights and runs evaluation here: the CPU wheel
# keeps the image 4 GB smaller; GPU kernels use CuPy. digit-recognizer-py (mnist-cnn)
# declares torchvision, which zoocodec never imports: install it without dependencies.
# constraints.txt holds the versions the tests passed with (the CUDA-only gpu extra is
# not in it: it cannot install on the CPU machine that writes the file).
RUN pip install --upgrade pip \
 && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install ".[gpu,video,ray,zoo]" -c constraints.txt \
 && pip install --no-deps digit-recognizer-py==0.1.0 \
 && python -c "import zoocodec, ray; from zoocodec.codecs import native; print('zoocodec', zoocodec.__version__, 'ray', ray.__version__, 'native threads', native.default_threads())"

WORKDIR /work
CMD ["bash"]
