// The qforge command-line tool: one CLI11 application, one subcommand per file. Each file adds
// its subcommand and options (the shared ones from options.hpp) and runs it from the callback.
#include <cstdio>
#include <exception>
#include <string>

#include <qforge/core/error.hpp>

#include "commands.hpp"
#include "options.hpp"

int main(int argc, char** argv) {
    CLI::App app{"qforge: post-training quantization of LLM weights, evaluation and export.\n"
                 "Data files are found through QFORGE_DATA (default: ../shared/data beside the source tree)."};
    app.name("qforge");
    app.require_subcommand(1);
    app.fallthrough(false);
    int status = 0;
    cli::add_eval(app, status);
    cli::add_quantize(app, status);
    cli::add_convert(app, status);
    cli::add_imatrix(app, status);
    cli::add_allocate(app, status);
    cli::add_ppl(app, status);
    cli::add_generate(app, status);
    cli::add_lens(app, status);
    cli::add_neurons(app, status);
    cli::add_weights(app, status);
    std::string command = "qforge";
    try {
        app.parse(argc, argv);
        return status;
    } catch (const CLI::ParseError& e) {
        // usage errors (an unknown option, a bad value: CLI11 names the option and the value) exit 2
        const int code = app.exit(e);
        return code == 0 ? 0 : 2;
    } catch (const qforge::Error& e) {
        for (const auto* sub : app.get_subcommands()) command = "qforge " + sub->get_name();
        std::fprintf(stderr, "%s: %s\n", command.c_str(), e.what());
        return 1;
    } catch (const std::exception& e) {
        for (const auto* sub : app.get_subcommands()) command = "qforge " + sub->get_name();
        std::fprintf(stderr, "%s: %s\n", command.c_str(), e.what());
        return 1;
    }
}
