# Developer manifest for conan 2: the dependencies of sluice's tests, examples and benchmarks.
#   conan install . --build=missing && cmake --preset conan-release
# The package recipe for consumers is packaging/conan/conanfile.py.
from conan import ConanFile
from conan.tools.cmake import cmake_layout


class SluiceDevConan(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "CMakeDeps", "CMakeToolchain"

    def requirements(self):
        self.requires("abseil/[>=20220623]")
        self.requires("boost/[>=1.81]")
        self.requires("hiredis/[>=1.0]")
        self.requires("catch2/[>=3.4]")
        self.requires("benchmark/[>=1.7]")
        self.requires("prometheus-cpp/[>=1.0]")
        self.requires("spdlog/[>=1.10]")
        self.requires("zlib/[>=1.2]")
        self.requires("openssl/[>=3.0]")

    def layout(self):
        cmake_layout(self)
