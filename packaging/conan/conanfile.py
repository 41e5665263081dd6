# Conan 2 recipe for sluice (header-only), built from this source tree:
#   conan create packaging/conan -o "sluice/*:with_redis=False"
import os

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class SluiceConan(ConanFile):
    name = "sluice"
    version = "0.1.0"
    description = ("Header-only C++20 resilience and caching primitives: circuit breaker, retry, "
                   "bulkhead, caches, rate limiters, pools, offload")
    license = "MIT"
    topics = ("resilience", "circuit-breaker", "cache", "rate-limiter", "asio", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_asio": [True, False], "with_redis": [True, False]}
    default_options = {"with_asio": True, "with_redis": True}
    no_copy_source = True

    def export_sources(self):
        root = os.path.join(self.recipe_folder, "..", "..")
        copy(self, "include/*", root, self.export_sources_folder)
        copy(self, "LICENSE", root, self.export_sources_folder)

    def layout(self):
        basic_layout(self, src_folder=".")

    def validate(self):
        check_min_cppstd(self, 20)
        if self.options.with_redis and not self.options.with_asio:
            raise ConanInvalidConfiguration("sluice: with_redis needs with_asio")

    def requirements(self):
        self.requires("abseil/[>=20220623]", transitive_headers=True)
        if self.options.with_asio:
            self.requires("boost/[>=1.81]", transitive_headers=True)
        if self.options.with_redis:
            self.requires("hiredis/[>=1.0]", transitive_headers=True)

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        excludes = []
        if not self.options.with_asio:
            excludes += ["sluice/asio/*", "sluice/asio.hpp"]
        if not self.options.with_redis:
            excludes += ["sluice/redis/*", "sluice/redis.hpp"]
        copy(self, "*.hpp", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"), excludes=tuple(excludes))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "sluice")
        self.cpp_info.set_property("cmake_target_name", "sluice::sluice")
        self.cpp_info.set_property("pkg_config_name", "sluice")

        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "sluice::core")
        core.bindirs = []
        core.libdirs = []
        core.requires = [
            "abseil::absl_base", "abseil::absl_synchronization", "abseil::absl_flat_hash_map",
            "abseil::absl_flat_hash_set", "abseil::absl_hash", "abseil::absl_status",
            "abseil::absl_statusor", "abseil::absl_strings", "abseil::absl_time",
            "abseil::absl_function_ref", "abseil::absl_inlined_vector",
        ]
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread"]

        if self.options.with_asio:
            asio = self.cpp_info.components["asio"]
            asio.set_property("cmake_target_name", "sluice::asio")
            asio.bindirs = []
            asio.libdirs = []
            asio.requires = ["core", "boost::headers"]

        if self.options.with_redis:
            redis = self.cpp_info.components["redis"]
            redis.set_property("cmake_target_name", "sluice::redis")
            redis.bindirs = []
            redis.libdirs = []
            redis.requires = ["asio", "hiredis::hiredislib"]
