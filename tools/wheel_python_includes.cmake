# Injected with -DCMAKE_PROJECT_INCLUDE by tools/build_interfaces.sh; never part of a colcon build.
#
# The ROS 2 message wheels on PyPI (ros-python-wheels) were built on a manylinux image, and their
# exported CMake targets (*__rosidl_generator_py) still name that image's Python and NumPy
# headers, /opt/python/cpXY-cpXY/...: CMake refuses to generate with a missing include folder.
# Once the project's CMakeLists has found its dependencies (a deferred call runs at the end of
# the directory), point those entries at this interpreter's headers.
cmake_language(DEFER CALL _prune2drive_wheel_python_includes)

function(_prune2drive_wheel_python_includes)
  get_directory_property(targets IMPORTED_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(dirs)
      list(TRANSFORM dirs REPLACE "^/opt/python/[^/]+/include/python3\\.[0-9]+$"
        "${Python3_INCLUDE_DIRS}")
      list(TRANSFORM dirs REPLACE "^/opt/python/[^/]+/.*/numpy/_core/include$"
        "${Python3_NumPy_INCLUDE_DIRS}")
      set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${dirs}")
    endif()
  endforeach()
endfunction()
