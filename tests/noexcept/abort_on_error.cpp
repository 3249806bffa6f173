// patchbay built with -fno-exceptions: a rejected input prints "patchbay::error: ..." and
// aborts. The program runs the failing call in a child process and checks both.
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include <patchbay/patchbay.hpp>

#ifdef __cpp_exceptions
#error "this test must be compiled with -fno-exceptions"
#endif

int main() {
    int fds[2];
    if (pipe(fds) != 0) return 2;
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        float a[4] = {}, b[6] = {};
        // batch mismatch: must print and abort, never return
        patchbay::require_same_shape(patchbay::make_view(a, 1, 1, 2, 2), patchbay::make_view(b, 1, 1, 2, 3),
                                     "noexcept-test", "cond", "uncond");
        _exit(0);
    }
    close(fds[1]);
    std::string err;
    char buf[256];
    for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<std::size_t>(n));
    int status = 0;
    waitpid(pid, &status, 0);
    const bool aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
    const bool named = err.find("patchbay::error: noexcept-test: tensor 'uncond' has shape") != std::string::npos;
    std::printf("aborted: %s, message: %s", aborted ? "yes" : "no", err.c_str());
    return aborted && named ? 0 : 1;
}
