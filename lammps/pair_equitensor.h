// pair_style equitensor: runs a .pt2 file written by `equitensor export` (AOTInductor package)
// inside LAMMPS, with MPI domain decomposition. See README.md ("LAMMPS") for the input lines.

#ifndef LMP_PAIR_EQUITENSOR_H
#define LMP_PAIR_EQUITENSOR_H

#include "pair.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>
#include <vector>

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace LAMMPS_NS {

class PairEquitensor : public Pair {
 public:
  PairEquitensor(class LAMMPS *);
  ~PairEquitensor() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 private:
  void allocate();
  void load_model(const std::string &path);
  void check_dtype();

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> model;
  std::string model_path;
  std::string requested_dtype;          // "" or the dtype named in pair_style
  c10::ScalarType dtype = c10::kDouble;  // the file's
  c10::Device device = c10::kCPU;        // the file's
  double cutoff = 0.0;                   // edges: |r_j - r_i| < cutoff
  double ghost_cutoff = 0.0;             // message_passing_steps * cutoff
  std::vector<int> model_numbers;        // atomic numbers the file knows
  std::vector<int64_t> type_number;      // LAMMPS atom type -> atomic number
};

}    // namespace LAMMPS_NS

#endif
