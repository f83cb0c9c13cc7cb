// cxx_newdelete.cpp — C++ allocation through libstdc++ (built by test_programs.sh with g++):
// new/delete, new[]/delete[], aligned new, containers, strings, an exception. Prints a
// checksum and "cxx ok", and makes 333 objects of class Marker (48 bytes each) the test counts.
#include <cstdio>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

struct Marker {
    char bytes[48];
};

struct alignas(128) Wide {
    char bytes[256];
};

int main()
{
    std::vector<Marker *> markers;
    for (int i = 0; i < 333; i++)
        markers.push_back(new Marker());
    for (Marker *m : markers)
        delete m;
    long sum = 0;
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 2000; i++)
        m[std::to_string(i * 7919 % 1000)].push_back(i);
    for (auto &kv : m)
        sum += (long)kv.second.size() * (long)kv.first.size();
    int *arr = new int[1000]();
    sum += arr[999];
    delete[] arr;
    auto w = std::make_unique<Wide>();
    if (reinterpret_cast<unsigned long>(w.get()) % 128 != 0)
        return 1;
    try {
        throw std::runtime_error(std::string(100, 'e'));
    } catch (const std::exception &e) {
        sum += (long)std::string(e.what()).size();
    }
    std::printf("checksum %ld\ncxx ok\n", sum);
    return 0;
}
