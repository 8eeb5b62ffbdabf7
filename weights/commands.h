// `deltaserve gen-model`: writes a complete checkpoint folder in a published layout.
#pragma once

namespace CLI {
class App;
}

namespace ds::weights {

void add_gen_model_command(CLI::App& app);

}  // namespace ds::weights
