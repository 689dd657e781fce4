"""What the GPU image (family <image_family>-gpu, ansible/roles/gpu) must hold, checked where it
was baked: the driver's packages from Debian's non-free archive, the module registered with DKMS
(on a VM: built for the kernel it boots), nouveau kept away, and the record of its GPU stack.
Without a GPU no driver can load: the checks that need one are marked `gpu` and run only where
nvidia-smi works. The `gpu_image` fixture skips this file for the plain image."""

import pytest

DRIVER_PACKAGES = ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"]


def _record(host) -> dict[str, str]:
    text = host.file("/etc/mlbatch-gpu").content_string
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.mark.parametrize("package", DRIVER_PACKAGES)
def test_the_driver_packages_are_debians_535(host, gpu_image, package):
    installed = host.package(package)
    assert installed.is_installed
    assert installed.version.startswith("535."), installed.version


def test_the_non_free_components_are_in_the_apt_sources(host, gpu_image):
    sources = host.file("/etc/apt/sources.list.d/mlbatch-gpu.list").content_string
    assert "non-free" in sources and "-security" in sources


def test_the_module_is_registered_with_dkms(host, gpu_image):
    status = host.run("dkms status")
    assert status.rc == 0, status.stderr
    assert "nvidia-current/535." in status.stdout


@pytest.mark.vm
def test_the_module_is_built_for_the_kernel_the_vm_boots(host, gpu_image):
    kernel = host.run("uname -r").stdout.strip()
    status = host.run("dkms status").stdout
    assert any(kernel in line and "installed" in line for line in status.splitlines()), status


def test_nouveau_is_blacklisted(host, gpu_image):
    assert "blacklist nouveau" in host.file("/etc/modprobe.d/nvidia-blacklists-nouveau.conf").content_string


def test_nvidia_smi_is_the_drivers(host, gpu_image):
    assert host.file("/usr/bin/nvidia-smi").is_file
    assert host.package("nvidia-smi").version == _record(host)["MLBATCH_GPU_DRIVER"]


def test_the_image_records_its_gpu_stack(host, gpu_image):
    record = _record(host)
    assert record["MLBATCH_GPU_DRIVER"].startswith("535.")
    assert record["MLBATCH_GPU_SECURE_BOOT"] == "off"
    toolkit = host.package("nvidia-container-toolkit")
    assert record["MLBATCH_GPU_TOOLKIT"] == (toolkit.version if toolkit.is_installed else "absent")


def test_the_container_toolkit_where_it_was_installed(host, gpu_image):
    """NVIDIA's toolkit is not packaged by Debian: installed only from a repository that carries it."""
    if _record(host)["MLBATCH_GPU_TOOLKIT"] == "absent":
        pytest.skip("no container toolkit in this image: the bake had no repository that carries it (README, GPU jobs)")
    assert host.run("nvidia-ctk --version").rc == 0
    assert host.file("/usr/bin/nvidia-container-runtime-hook").is_file


@pytest.mark.vm
def test_the_engine_has_the_nvidia_runtime_where_the_toolkit_is(host, gpu_image):
    if _record(host)["MLBATCH_GPU_TOOLKIT"] == "absent":
        pytest.skip("no container toolkit in this image: no nvidia runtime to register")
    assert '"nvidia"' in host.file("/etc/docker/daemon.json").content_string
    assert "nvidia" in host.run("docker info --format '{{json .Runtimes}}'").stdout


@pytest.mark.gpu
def test_nvidia_smi_lists_the_gpus(host, working_gpu):
    assert "GPU 0:" in working_gpu


@pytest.mark.gpu
@pytest.mark.vm
def test_a_container_gets_the_gpus(host, working_gpu):
    result = host.run("docker run --rm --gpus all debian:bookworm-slim nvidia-smi -L")
    assert result.rc == 0 and "GPU 0:" in result.stdout, result.stderr
