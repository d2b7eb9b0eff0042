enum _PlaceholderChatSystem {}
